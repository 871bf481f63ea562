// Spool dashboard: live refresh of the region marked data-live, a pause
// switch, and "copy". Everything works without this script; it only saves
// pressing Refresh. It replaces the live region's content in place,
// keeping the page's scroll, the checked boxes and the focused control.
(function () {
  "use strict";
  var INTERVAL = 3000;
  var live = document.querySelector("[data-live]");
  var toggle = document.getElementById("live-toggle");
  var paused = false;
  try { paused = localStorage.getItem("spool.live.paused") === "1"; } catch (e) {}

  function setPaused(p) {
    paused = p;
    try { localStorage.setItem("spool.live.paused", p ? "1" : "0"); } catch (e) {}
    if (toggle) {
      toggle.setAttribute("aria-pressed", p ? "true" : "false");
      toggle.textContent = p ? "Resume live updates" : "Pause live updates";
    }
  }

  function refresh() {
    if (paused || document.hidden || !live) return;
    var u = new URL(window.location.href);
    u.searchParams.set("fragment", "live");
    u.searchParams.delete("id");
    fetch(u.toString(), { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html === null || paused) return;
        var checked = {};
        live.querySelectorAll("input[type=checkbox]:checked").forEach(function (c) { checked[c.id] = true; });
        var focused = document.activeElement && live.contains(document.activeElement) ? document.activeElement.id : "";
        var tmp = document.createElement("div");
        tmp.innerHTML = html;
        if (tmp.innerHTML === live.innerHTML) return;
        live.replaceChildren.apply(live, Array.prototype.slice.call(tmp.childNodes));
        Object.keys(checked).forEach(function (id) {
          var c = document.getElementById(id);
          if (c) c.checked = true;
        });
        if (focused) { var f = document.getElementById(focused); if (f) f.focus(); }
        live.setAttribute("data-refreshed", String(Date.now()));
      })
      .catch(function () {});
  }

  if (live && toggle) {
    toggle.hidden = false;
    setPaused(paused);
    toggle.addEventListener("click", function () { setPaused(!paused); if (!paused) refresh(); });
    setInterval(refresh, INTERVAL);
  }

  document.querySelectorAll("button[data-copy]").forEach(function (b) {
    var src = document.getElementById(b.getAttribute("data-copy"));
    if (!src || !navigator.clipboard) return;
    b.hidden = false;
    b.addEventListener("click", function () {
      navigator.clipboard.writeText(src.textContent).then(function () { b.textContent = "Copied"; });
    });
  });
})();
