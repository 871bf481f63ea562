package ui

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spoolhq/spool/internal/auth"
	"github.com/spoolhq/spool/internal/task"
)

// page is what every template gets: the page's own data in Data and the
// frame's (role, CSRF token, flash message) around it.
type page struct {
	Title    string
	Role     auth.Role
	CanWrite bool
	Admin    bool
	SignedIn bool // a real session: show sign-out
	Open     bool // open mode: no keys configured
	CSRF     string
	Flash    string
	Path     string // this page's path, for the live refresh
	Now      time.Time
	Data     any
}

// pageNames are the templates under templates/, each rendered inside layout.html.
var pageNames = []string{"overview", "queue", "task", "enqueue", "signin", "error"}

func parsePages() (map[string]*template.Template, error) {
	out := make(map[string]*template.Template, len(pageNames))
	for _, name := range pageNames {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("ui: template %s: %w", name, err)
		}
		out[name] = t
	}
	return out, nil
}

// render writes a whole page, or with ?fragment=live only its live region
// (the part the script swaps in place, so scroll and selection survive).
func (s *Server) render(w http.ResponseWriter, r *http.Request, sess session, status int, name, title string, data any) {
	p := page{Title: title, Role: sess.role, CanWrite: sess.role.Allows(auth.Write), Admin: sess.role.Allows(auth.Admin),
		SignedIn: sess.key != nil, Open: s.sess.openMode(), Path: r.URL.Path, Now: s.cfg.Now(), Data: data}
	if sess.role != auth.None {
		p.CSRF = s.sess.csrfToken(sess)
	}
	if r.Method == http.MethodGet && r.URL.Query().Get("fragment") == "" {
		p.Flash = s.takeFlash(w, r)
	}
	t := s.pages[name]
	tmpl := "layout.html"
	if r.URL.Query().Get("fragment") == "live" && t.Lookup("live") != nil {
		tmpl = "live"
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, tmpl, p); err != nil {
		s.log.Error("dashboard: render", "spool.template", name, "error.message", err.Error())
		http.Error(w, "internal error rendering the page", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

var funcs = template.FuncMap{
	"time":     fmtTime,
	"ago":      ago,
	"duration": func(d time.Duration) string { return d.String() },
	"states":   func() []task.State { return task.States },
	"count": func(c map[task.State]int64, st task.State) int64 {
		return c[st]
	},
	"total": func(c map[task.State]int64) int64 {
		var n int64
		for _, v := range c {
			n += v
		}
		return n
	},
	"num":     func(n int64) string { return groupDigits(n) },
	"float":   func(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) },
	"pct":     func(f float64) string { return strconv.FormatFloat(f*100, 'f', 1, 64) + "%" },
	"eq":      func(a, b any) bool { return fmt.Sprint(a) == fmt.Sprint(b) },
	"add":     func(a, b int) int { return a + b },
	"methods": func() []string { return methods },
	"priorities": func() []int {
		var ps []int
		for p := task.MinPriority; p <= task.MaxPriority; p++ {
			ps = append(ps, p)
		}
		return ps
	},
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04:05.000 UTC")
}

// ago is a coarse age, for the eye; the exact time is in the title.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := now.Sub(t)
	future := d < 0
	if future {
		d = -d
	}
	var s string
	switch {
	case d < time.Minute:
		s = strconv.Itoa(int(d.Seconds())) + "s"
	case d < time.Hour:
		s = strconv.Itoa(int(d.Minutes())) + "m"
	case d < 48*time.Hour:
		s = strconv.Itoa(int(d.Hours())) + "h"
	default:
		s = strconv.Itoa(int(d.Hours()/24)) + "d"
	}
	if future {
		return "in " + s
	}
	return s + " ago"
}

func groupDigits(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// payloadView is a payload as the task page shows it: pretty JSON, text,
// or a hex dump of its first bytes.
type payloadView struct {
	Kind  string // "json", "text", "hex", "empty"
	Text  string
	Size  int
	Shown int // bytes shown in a hex preview
}

const hexPreview = 512

func viewPayload(b []byte, contentType string) payloadView {
	v := payloadView{Size: len(b)}
	switch {
	case len(b) == 0:
		v.Kind = "empty"
	case isJSON(contentType) || (json.Valid(b) && utf8.Valid(b)):
		var out bytes.Buffer
		if err := json.Indent(&out, b, "", "  "); err == nil {
			v.Kind, v.Text = "json", out.String()
			break
		}
		fallthrough
	case utf8.Valid(b) && !bytes.ContainsAny(b, "\x00"):
		v.Kind, v.Text = "text", string(b)
	default:
		n := min(len(b), hexPreview)
		v.Kind, v.Text, v.Shown = "hex", hex.Dump(b[:n]), n
	}
	return v
}

func isJSON(ct string) bool {
	ct = strings.ToLower(strings.TrimSpace(strings.SplitN(ct, ";", 2)[0]))
	return ct == "application/json" || strings.HasSuffix(ct, "+json")
}
