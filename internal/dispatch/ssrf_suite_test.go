package dispatch

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// The SSRF suite: every way of naming a loopback, private, link-local or
// metadata address that a target URL can carry, each tried through
// Guard.CheckURL (the enqueue-time check), through the HTTP client
// deliveries use (the dial-time check), and through a running Dispatcher;
// refused unless allow-listed, and let through when allow-listed.
//
// Only loopback traffic is sent. Names are resolved by a DNS server the
// test runs on 127.0.0.1, wired in through Guard.Resolver. Loopback
// addresses are dialled for real, at listeners that count connections, so
// "refused" means nothing arrived. A dial to any other address is stopped
// by a tripwire placed after the guard in the dialer's Control: the
// tripwire records what the guard let through and fails the dial before a
// packet leaves, so even a broken guard sends nothing off the machine.

// ssrfCase is one way of naming an address in a target URL.
type ssrfCase struct {
	name string
	host string // the URL's host, as a client writes it (brackets, %25 zones)
	// addr is what a dial reaches: the literal, what the test's DNS
	// answers, or "" when Go's resolver cannot resolve the spelling at
	// all (it reads 127.1 or 0177.0.0.1 as a name, and all-numeric names
	// are never looked up).
	addr string
	// allow is the prefix that allow-lists the case ("" = addr/32 or /128).
	allow string
	// dns marks a name the test's DNS resolves: CheckURL cannot know its
	// address, so it is accepted at enqueue and refused when dialled.
	dns bool
}

// ssrfCases are the cases of the SSRF item, and a few more.
func ssrfCases() []ssrfCase {
	return []ssrfCase{
		// Private (RFC 1918), at the edges of each range.
		{name: "10/8", host: "10.0.0.1", addr: "10.0.0.1"},
		{name: "10/8 top", host: "10.255.255.254", addr: "10.255.255.254"},
		{name: "172.16/12", host: "172.16.0.1", addr: "172.16.0.1"},
		{name: "172.16/12 top", host: "172.31.255.254", addr: "172.31.255.254"},
		{name: "192.168/16", host: "192.168.1.1", addr: "192.168.1.1"},
		// Loopback.
		{name: "127.0.0.1", host: "127.0.0.1", addr: "127.0.0.1"},
		{name: "127.0.0.1 trailing dot", host: "127.0.0.1.", addr: "", allow: "127.0.0.1/32"},
		{name: "127/8 elsewhere", host: "127.0.0.2", addr: "127.0.0.2"},
		{name: "::1", host: "[::1]", addr: "::1"},
		{name: "::1 long form", host: "[0:0:0:0:0:0:0:1]", addr: "::1"},
		{name: "localhost", host: "localhost", addr: "127.0.0.1", allow: "127.0.0.0/8"},
		// Go reads /etc/hosts without the trailing dot and asks DNS (here,
		// the test's, which does not know it); CheckURL refuses it anyway.
		{name: "LOCALHOST.", host: "LOCALHOST.", addr: "", allow: "127.0.0.0/8"},
		// Link-local and cloud metadata.
		{name: "169.254/16", host: "169.254.0.1", addr: "169.254.0.1"},
		{name: "metadata", host: "169.254.169.254", addr: "169.254.169.254"},
		{name: "unspecified", host: "0.0.0.0", addr: "0.0.0.0"},
		// IPv6 unique-local (fc00::/7) and link-local (fe80::/10).
		{name: "fc00::/7 low", host: "[fc00::1]", addr: "fc00::1"},
		{name: "fc00::/7 fd", host: "[fd00::1]", addr: "fd00::1"},
		{name: "fe80::/10", host: "[fe80::1]", addr: "fe80::1"},
		{name: "fe80::/10 top", host: "[febf::1]", addr: "febf::1"},
		{name: "fe80::/10 zoned", host: "[fe80::1%25lo]", addr: "fe80::1", allow: "fe80::/10"},
		// A zone on a non-link-local address used to slip past the prefix
		// list: netip.Prefix.Contains is false for zoned addresses.
		{name: "zoned NAT64 loopback", host: "[64:ff9b::7f00:1%25lo]", addr: "64:ff9b::7f00:1", allow: "64:ff9b::/96"},
		{name: "zoned documentation", host: "[2001:db8::1%25lo]", addr: "2001:db8::1", allow: "2001:db8::/32"},
		// IPv4 inside IPv6.
		{name: "mapped loopback", host: "[::ffff:127.0.0.1]", addr: "127.0.0.1"},
		{name: "mapped loopback hex", host: "[::ffff:7f00:1]", addr: "127.0.0.1"},
		{name: "mapped private", host: "[::ffff:10.0.0.1]", addr: "10.0.0.1"},
		{name: "mapped metadata", host: "[::ffff:a9fe:a9fe]", addr: "169.254.169.254"},
		{name: "IPv4-compatible loopback", host: "[::127.0.0.1]", addr: "::7f00:1", allow: "::/96"},
		{name: "IPv4-translated loopback", host: "[::ffff:0:127.0.0.1]", addr: "::ffff:0:7f00:1", allow: "::ffff:0:0:0/96"},
		{name: "NAT64 metadata", host: "[64:ff9b::a9fe:a9fe]", addr: "64:ff9b::a9fe:a9fe", allow: "64:ff9b::/96"},
		{name: "6to4 loopback", host: "[2002:7f00:1::1]", addr: "2002:7f00:1::1", allow: "2002::/16"},
		{name: "Teredo", host: "[2001:0:4136:e378:8000:63bf:3fff:fdd2]", addr: "2001:0:4136:e378:8000:63bf:3fff:fdd2", allow: "2001::/32"},
		// Legacy IPv4 spellings. Go's resolver reads all-numeric ones as
		// names and never looks them up (so they cannot be dialled); glibc
		// and browsers read them as addresses, so CheckURL does too.
		{name: "short 127.1", host: "127.1", allow: "127.0.0.0/8"},
		{name: "short 10.1", host: "10.1", allow: "10.0.0.0/8"},
		{name: "decimal", host: "2130706433", allow: "127.0.0.0/8"},
		{name: "decimal metadata", host: "2852039166", allow: "169.254.0.0/16"},
		{name: "octal", host: "0177.0.0.1", allow: "127.0.0.0/8"},
		{name: "octal whole", host: "017700000001", allow: "127.0.0.0/8"},
		{name: "octal private", host: "012.0.0.1", allow: "10.0.0.0/8"},
		// Hex spellings contain letters, so Go's resolver does query DNS for
		// them; the test's DNS answers as inet_aton would, standing in for
		// a resolver that reads them as addresses.
		{name: "hex dotted", host: "0x7f.0.0.1", addr: "127.0.0.1", allow: "127.0.0.0/8"},
		{name: "hex whole", host: "0x7f000001", addr: "127.0.0.1", allow: "127.0.0.0/8"},
		{name: "hex mixed", host: "0x7f.1", addr: "127.0.0.1", allow: "127.0.0.0/8"},
		{name: "hex metadata", host: "0xa9fea9fe", addr: "169.254.169.254", allow: "169.254.0.0/16"},
		// Unicode: net/http maps a non-ASCII host with IDNA before dialling,
		// so fullwidth digits and ideographic full stops spell an address.
		{name: "fullwidth", host: "１２７.０.０.１", addr: "127.0.0.1", allow: "127.0.0.0/8"},
		{name: "ideographic stops", host: "127。0。0。1", addr: "127.0.0.1", allow: "127.0.0.0/8"},
		{name: "fullwidth localhost", host: "ｌｏｃａｌｈｏｓｔ", addr: "127.0.0.1", allow: "127.0.0.0/8"},
		// Names the test's DNS resolves to forbidden addresses.
		{name: "name to 10/8", host: "ten.spool.test", addr: "10.1.2.3", dns: true},
		{name: "name to loopback", host: "loop.spool.test", addr: "127.0.0.1", dns: true},
		{name: "name to metadata", host: "metadata.spool.test", addr: "169.254.169.254", dns: true},
		{name: "name to ::1", host: "loop6.spool.test", addr: "::1", dns: true},
		{name: "name to fd00::/8", host: "ula.spool.test", addr: "fd12:3456::1", dns: true},
		{name: "name to fe80::/10", host: "ll6.spool.test", addr: "fe80::2", dns: true},
		{name: "name to mapped loopback", host: "mapped.spool.test", addr: "127.0.0.1", allow: "127.0.0.0/8", dns: true},
		{name: "name, all answers forbidden", host: "many.spool.test", addr: "10.9.9.9", allow: "10.9.9.9/32", dns: true},
	}
}

// publicControls are just outside the forbidden ranges: the guard must let
// them through (the tripwire then stops the dial), so the ranges are not
// drawn wider than they should be.
var publicControls = []string{"9.255.255.255", "11.0.0.1", "172.15.255.255", "172.32.0.1", "192.167.255.255",
	"192.169.0.1", "169.253.255.255", "169.255.0.1", "93.184.216.34", "[2606:4700:4700::1111]", "[2a00:1450::1]",
	"[fbff:ffff::1]", "[::ffff:8.8.8.8]", "[2001:4860::8888]"}

// addLegacyAnswers gives the hex spellings the answers an inet_aton
// resolver would, and the DNS cases theirs.
func ssrfDNS(t *testing.T) *fakeDNS {
	d := startFakeDNS(t)
	d.set("0x7f.0.0.1", "127.0.0.1")
	d.set("0x7f000001", "127.0.0.1")
	d.set("0x7f.1", "127.0.0.1")
	d.set("0xa9fea9fe", "169.254.169.254")
	d.set("ten.spool.test", "10.1.2.3")
	d.set("loop.spool.test", "127.0.0.1")
	d.set("metadata.spool.test", "169.254.169.254")
	d.set("loop6.spool.test", "::1")
	d.set("ula.spool.test", "fd12:3456::1")
	d.set("ll6.spool.test", "fe80::2")
	d.set("mapped.spool.test", "::ffff:127.0.0.1")
	d.set("many.spool.test", "10.9.9.9", "127.0.0.1", "192.168.9.9", "::1", "fd00::9")
	return d
}

func (c ssrfCase) url(port int) string {
	return "http://" + c.host + ":" + strconv.Itoa(port) + "/ssrf"
}

func (c ssrfCase) allowed(t *testing.T) []netip.Prefix {
	t.Helper()
	if c.allow != "" {
		return []netip.Prefix{netip.MustParsePrefix(c.allow)}
	}
	a := netip.MustParseAddr(c.addr)
	return []netip.Prefix{netip.PrefixFrom(a, a.BitLen())}
}

// TestSSRFSuiteCheckURL: the enqueue-time check refuses every literal
// spelling unless allow-listed, and leaves names to the dial.
func TestSSRFSuiteCheckURL(t *testing.T) {
	t.Parallel()
	for _, c := range ssrfCases() {
		u, err := url.Parse(c.url(80))
		if err != nil {
			t.Fatalf("%s: url.Parse(%q): %v", c.name, c.url(80), err)
		}
		err = Guard{}.CheckURL(u)
		switch {
		case c.dns && err != nil:
			t.Errorf("%s: a name must be left to the dial-time check, got %v", c.name, err)
		case !c.dns && !errors.Is(err, ErrForbiddenTarget):
			t.Errorf("%s: CheckURL(%s) = %v, want ErrForbiddenTarget", c.name, u, err)
		}
		if err := (Guard{Allowed: c.allowed(t)}).CheckURL(u); err != nil {
			t.Errorf("%s: allow-listed %v, still refused: %v", c.name, c.allowed(t), err)
		}
	}
	for _, h := range publicControls {
		u, _ := url.Parse("http://" + h + "/")
		if err := (Guard{}).CheckURL(u); err != nil {
			t.Errorf("public %s refused: %v", h, err)
		}
	}
	// Spellings that are names (or not addresses) stay names.
	for _, h := range []string{"example.com", "0x7f.example", "deadbeef", "1.2.3.4.5", "256.0.0.1", "0x100000000", "bücher.example", "xn--bcher-kva.example"} {
		u, _ := url.Parse("http://" + h + "/")
		if err := (Guard{}).CheckURL(u); err != nil {
			t.Errorf("name %s refused at enqueue: %v", h, err)
		}
	}
}

// TestLegacyIPv4 pins the legacy spellings to the addresses inet_aton and
// the WHATWG URL standard give them.
func TestLegacyIPv4(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"127.1": "127.0.0.1", "127.0.1": "127.0.0.1", "2130706433": "127.0.0.1", "0177.0.0.1": "127.0.0.1",
		"017700000001": "127.0.0.1", "0x7f.0.0.1": "127.0.0.1", "0x7f000001": "127.0.0.1", "0X7F.1": "127.0.0.1",
		"0x7f.0x0.0x0.0x1": "127.0.0.1", "0": "0.0.0.0", "0x": "0.0.0.0", "4294967295": "255.255.255.255",
		"10.1": "10.0.0.1", "192.168.257": "192.168.1.1", "1.2.3.4": "1.2.3.4",
	} {
		got, ok := legacyIPv4(in)
		if !ok || got.String() != want {
			t.Errorf("legacyIPv4(%q) = %v, %v; want %s", in, got, ok, want)
		}
	}
	for _, in := range []string{"", ".", "1.", "1..2", "4294967296", "256.1", "1.256.1", "1.2.65536", "1.2.3.256", "1.2.3.4.5",
		"08", "0x1g", "-1", "+1", "1 ", "0x-1", "a.b.c.d", "1_000", "0b1"} {
		if got, ok := legacyIPv4(in); ok {
			t.Errorf("legacyIPv4(%q) = %v; want no address", in, got)
		}
	}
}

// TestSSRFSuiteClient sends a real request for every case through the
// delivery client: refused (or, for spellings Go cannot resolve, not
// resolved) with no connection anywhere; then allow-listed, and let
// through to exactly the address the case names.
func TestSSRFSuiteClient(t *testing.T) {
	t.Parallel()
	ls := startSSRFListeners(t)
	dns := ssrfDNS(t)
	ctx := context.Background()
	for _, c := range ssrfCases() {
		tw := &tripwire{}
		g := Guard{Resolver: dns.resolver()}
		client := NewHTTPClient(g)
		if !c.loopback() {
			client = newHTTPClient(g, tw.control(g))
		}
		before := ls.total()
		req, err := http.NewRequestWithContext(ctx, "GET", c.url(ls.port), nil)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		_, err = client.Do(req)
		if c.addr == "" {
			var de *net.DNSError
			if !errors.As(err, &de) || !de.IsNotFound {
				t.Errorf("%s: want a not-found lookup (Go reads %q as a name), got %v", c.name, c.host, err)
			}
		} else if !errors.Is(err, ErrForbiddenTarget) {
			t.Errorf("%s: want ErrForbiddenTarget, got %v", c.name, err)
		}
		if got := tw.seen(); len(got) > 0 {
			t.Errorf("%s: the guard let a dial to %v through", c.name, got)
		}
		if ls.total() != before {
			t.Errorf("%s: a loopback listener was reached: %s", c.name, ls)
		}

		// Allow-listed: the dial reaches the case's address and nothing else.
		tw = &tripwire{}
		g.Allowed = c.allowed(t)
		resp, err := newHTTPClient(g, tw.control(g)).Do(req.Clone(ctx))
		if resp != nil {
			resp.Body.Close()
		}
		switch {
		case c.addr == "":
			var de *net.DNSError
			if !errors.As(err, &de) {
				t.Errorf("%s allow-listed: want a failed lookup, got %v", c.name, err)
			}
		case c.loopback() && !ls.reachable(c):
			// No IPv6 loopback here: let through, and refused by the kernel.
		case c.loopback():
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Errorf("%s allow-listed: want 200 from the listener, got %v", c.name, err)
			}
		default:
			// Let through by the guard and stopped by the tripwire (or, for
			// a name with several answers, the others refused by the guard).
			if err == nil {
				t.Errorf("%s allow-listed: a request off loopback succeeded", c.name)
			}
		}
		if c.addr != "" {
			want := netip.MustParseAddr(c.addr).Unmap()
			if got := tw.seen(); len(got) != 1 || got[0] != want {
				t.Errorf("%s allow-listed: dialled %v, want exactly [%s]", c.name, got, want)
			}
		}
	}
	if n := ls.total(); n != ls.expectedLoopbackHits() {
		t.Errorf("listeners saw %d connections, want %d (one per allow-listed loopback case): %s", n, ls.expectedLoopbackHits(), ls)
	}

	// Public addresses pass the guard (the tripwire stops them).
	for _, h := range publicControls {
		tw := &tripwire{}
		g := Guard{Resolver: dns.resolver()}
		_, err := newHTTPClient(g, tw.control(g)).Get("http://" + h + ":80/")
		if !errors.Is(err, errTripwire) || len(tw.seen()) != 1 {
			t.Errorf("public %s: want the dial let through, got %v (dialled %v)", h, err, tw.seen())
		}
	}
}

// TestSSRFSuiteDispatcher runs every case as a task through a running
// Dispatcher on the real SQLite store: each fails permanently on its first
// attempt (the spellings Go cannot resolve fail as lookups, retried until
// their attempts run out), nothing reaches a loopback listener, and
// nothing off loopback is dialled. Allow-listed, the loopback cases are
// delivered.
func TestSSRFSuiteDispatcher(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ls := startSSRFListeners(t)
	dns := ssrfDNS(t)
	tw := &tripwire{}
	g := Guard{Resolver: dns.resolver()}
	d := h.dispatcher(func(cfg *Config) { cfg.Client = newHTTPClient(g, tw.control(g)) })
	defer stop(d)

	ids := map[string]ssrfCase{}
	for _, c := range ssrfCases() {
		ids[h.enqueue(c.url(ls.port), func(nt *store.NewTask) { nt.MaxAttempts = 2 })] = c
	}
	for id, c := range ids {
		tk := h.waitFinal(id)
		switch {
		case tk.State != task.Failed:
			t.Errorf("%s: ended %s (%q), want failed", c.name, tk.State, tk.LastError)
		case c.addr == "" && (tk.Attempt != 2 || !strings.Contains(tk.LastError, "no such host")):
			t.Errorf("%s: attempt %d, %q; want 2 attempts failing as lookups", c.name, tk.Attempt, tk.LastError)
		case c.addr != "" && (tk.Attempt != 1 || !strings.Contains(tk.LastError, ErrForbiddenTarget.Error())):
			t.Errorf("%s: attempt %d, %q; want a permanent refusal on attempt 1", c.name, tk.Attempt, tk.LastError)
		}
	}
	if got := tw.seen(); len(got) > 0 {
		t.Errorf("the guard let dials to %v through", got)
	}
	if ls.total() != 0 {
		t.Errorf("a loopback listener was reached: %s", ls)
	}

	// The same loopback cases, allow-listed, are delivered.
	h2 := newHarness(t)
	g2 := Guard{Resolver: dns.resolver(), Allowed: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}}
	d2 := h2.dispatcher(func(cfg *Config) { cfg.Client = NewHTTPClient(g2) })
	defer stop(d2)
	n := 0
	for _, c := range ssrfCases() {
		if !c.loopback() || !ls.reachable(c) {
			continue
		}
		id := h2.enqueue(c.url(ls.port), nil)
		if tk := h2.waitFinal(id); tk.State != task.Succeeded {
			t.Errorf("%s allow-listed: ended %s (%q)", c.name, tk.State, tk.LastError)
		}
		n++
	}
	if ls.total() != n {
		t.Errorf("allow-listed: listeners saw %d requests, want %d: %s", ls.total(), n, ls)
	}
}

// TestSSRFSuiteRebinding: a name whose answer changes between a check and
// the dial. The guard checks the address dialled, so the change is caught
// on whichever dial sees the forbidden answer.
func TestSSRFSuiteRebinding(t *testing.T) {
	t.Parallel()
	ls := startSSRFListeners(t)
	dns := ssrfDNS(t)
	ctx := context.Background()

	t.Run("check then dial", func(t *testing.T) {
		// A validator resolving the name first (as a proxy or a webhook
		// form might) sees a public address; the dial then sees loopback.
		dns.set("rebind.spool.test", "93.184.216.34")
		dns.then("rebind.spool.test", "127.0.0.1")
		g := Guard{Resolver: dns.resolver()}
		addrs, err := g.Resolver.LookupNetIP(ctx, "ip4", "rebind.spool.test")
		if err != nil || len(addrs) != 1 || g.CheckAddr(addrs[0]) != nil {
			t.Fatalf("the first answer should be public and pass the check: %v %v", addrs, err)
		}
		before := ls.total()
		_, err = NewHTTPClient(g).Get(fmt.Sprintf("http://rebind.spool.test:%d/", ls.port))
		if !errors.Is(err, ErrForbiddenTarget) {
			t.Errorf("dial after rebinding: want ErrForbiddenTarget, got %v", err)
		}
		if ls.total() != before {
			t.Errorf("the rebound name reached a listener: %s", ls)
		}
	})

	t.Run("between two deliveries", func(t *testing.T) {
		// 127.0.0.2 stands in for a public address (it is allow-listed, and
		// unlike a real one it can be dialled without leaving the machine);
		// 127.0.0.1 is the private one.
		dns.set("flip.spool.test", "127.0.0.2")
		dns.then("flip.spool.test", "127.0.0.1")
		c := NewHTTPClient(Guard{Resolver: dns.resolver(), Allowed: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}})
		u := fmt.Sprintf("http://flip.spool.test:%d/", ls.port)
		before1, before2 := ls.hits("127.0.0.1"), ls.hits("127.0.0.2")
		resp, err := c.Get(u)
		if err != nil {
			t.Fatalf("first request (public answer): %v", err)
		}
		resp.Body.Close()
		c.CloseIdleConnections() // the next request must dial, not reuse
		if _, err := c.Get(u); !errors.Is(err, ErrForbiddenTarget) {
			t.Errorf("second request (rebound answer): want ErrForbiddenTarget, got %v", err)
		}
		if ls.hits("127.0.0.2")-before2 != 1 || ls.hits("127.0.0.1") != before1 {
			t.Errorf("want one request at the public stand-in and none at loopback: %s", ls)
		}
	})

	t.Run("between two attempts of a task", func(t *testing.T) {
		// The first attempt reaches the public stand-in, which answers 503;
		// the retry resolves again, gets loopback and fails permanently.
		h := newHarness(t)
		dns.set("retry.spool.test", "127.0.0.2")
		dns.then("retry.spool.test", "127.0.0.1")
		g := Guard{Resolver: dns.resolver(), Allowed: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}}
		d := h.dispatcher(func(cfg *Config) { cfg.Client = NewHTTPClient(g) })
		defer stop(d)
		before1, before2 := ls.hits("127.0.0.1"), ls.hits("127.0.0.2")
		id := h.enqueue(fmt.Sprintf("http://retry.spool.test:%d/status/503", ls.port), func(nt *store.NewTask) { nt.MaxAttempts = 3 })
		tk := h.waitFinal(id)
		if tk.State != task.Failed || tk.Attempt != 2 || !strings.Contains(tk.LastError, ErrForbiddenTarget.Error()) {
			t.Errorf("ended %s after %d attempts (%q); want failed on attempt 2 by the guard", tk.State, tk.Attempt, tk.LastError)
		}
		if ls.hits("127.0.0.2")-before2 != 1 || ls.hits("127.0.0.1") != before1 {
			t.Errorf("want one request at the public stand-in and none at loopback: %s", ls)
		}
	})

	t.Run("forbidden and allowed answers together", func(t *testing.T) {
		// The dialer tries each answer in turn: the forbidden one is
		// refused, the allowed one is used.
		dns.set("mixed.spool.test", "127.0.0.1", "127.0.0.2")
		c := NewHTTPClient(Guard{Resolver: dns.resolver(), Allowed: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}})
		before1, before2 := ls.hits("127.0.0.1"), ls.hits("127.0.0.2")
		resp, err := c.Get(fmt.Sprintf("http://mixed.spool.test:%d/", ls.port))
		if err != nil {
			t.Fatalf("want the allowed answer used, got %v", err)
		}
		resp.Body.Close()
		if ls.hits("127.0.0.2")-before2 != 1 || ls.hits("127.0.0.1") != before1 {
			t.Errorf("want the request at 127.0.0.2 only: %s", ls)
		}
	})
}

// TestSSRFSuiteRedirects: a target answering with a redirect to a
// forbidden address is never followed, by the client or by a delivery:
// the attempt fails permanently, naming the redirect.
func TestSSRFSuiteRedirects(t *testing.T) {
	t.Parallel()
	ls := startSSRFListeners(t)
	h := newHarness(t)
	// The redirecting target is allow-listed (127.0.0.2); where it points is not.
	g := Guard{Allowed: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}}
	d := h.dispatcher(func(cfg *Config) { cfg.Client = NewHTTPClient(g) })
	defer stop(d)

	targets := []string{
		fmt.Sprintf("http://127.0.0.1:%d/x", ls.port),
		fmt.Sprintf("http://[::1]:%d/x", ls.port),
		fmt.Sprintf("http://localhost:%d/x", ls.port),
		"http://169.254.169.254/latest/meta-data/",
		fmt.Sprintf("http://127.0.0.2:%d/status/200", ls.port), // even an allowed place
		"/status/200", // even the same host
	}
	before1, before6 := ls.hits("127.0.0.1"), ls.hits("::1")
	type want struct {
		code int
		to   string
	}
	ids := map[string]want{}
	for _, code := range []int{301, 302, 303, 307, 308} {
		for _, to := range targets {
			u := fmt.Sprintf("http://127.0.0.2:%d/redirect/%d?to=%s", ls.port, code, url.QueryEscape(to))
			ids[h.enqueue(u, nil)] = want{code, to}
		}
	}
	for id, w := range ids {
		tk := h.waitFinal(id)
		if tk.State != task.Failed || tk.Attempt != 1 || tk.LastStatus != w.code ||
			!strings.Contains(tk.LastError, "redirects are not followed") {
			t.Errorf("%d to %s: ended %s, attempt %d, status %d, %q; want failed on attempt 1 as a redirect",
				w.code, w.to, tk.State, tk.Attempt, tk.LastStatus, tk.LastError)
		}
	}
	if ls.hits("127.0.0.1") != before1 || ls.hits("::1") != before6 {
		t.Errorf("a redirect was followed to loopback: %s", ls)
	}
	if n := ls.pathHits("/status/200"); n != 0 {
		t.Errorf("redirects to allowed places were followed %d times", n)
	}

	// The client alone: the 302 is the response, and no second request.
	before := ls.total()
	resp, err := NewHTTPClient(g).Get(fmt.Sprintf("http://127.0.0.2:%d/redirect/302?to=%s", ls.port, url.QueryEscape(targets[0])))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || ls.total() != before+1 {
		t.Errorf("client: status %d after %d requests; want 302 after 1", resp.StatusCode, ls.total()-before)
	}
}

// loopback reports whether the case's address is on this machine, where
// the test may really dial it.
func (c ssrfCase) loopback() bool {
	if c.addr == "" {
		return false
	}
	return netip.MustParseAddr(c.addr).Unmap().IsLoopback()
}

// errTripwire stops a dial the guard let through to an address off loopback.
var errTripwire = errors.New("tripwire: the guard let this dial through")

// tripwire runs after the guard in the dialer's Control and records every
// address the guard passed.
type tripwire struct {
	mu     sync.Mutex
	passed []netip.Addr
}

func (tw *tripwire) control(g Guard) func(string, string, syscall.RawConn) error {
	return func(network, address string, c syscall.RawConn) error {
		if err := g.control(network, address, c); err != nil {
			return err
		}
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("tripwire: %q: %w", address, err)
		}
		a := ap.Addr().WithZone("").Unmap()
		tw.mu.Lock()
		tw.passed = append(tw.passed, a)
		tw.mu.Unlock()
		if !a.IsLoopback() {
			return errTripwire
		}
		return nil
	}
}

func (tw *tripwire) seen() []netip.Addr {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	return append([]netip.Addr(nil), tw.passed...)
}

// ssrfListeners are HTTP servers on 127.0.0.1, 127.0.0.2 and ::1, all on
// one port, counting requests by address and path. /status/N answers N;
// /redirect/N?to=U answers N with Location U; anything else 200.
type ssrfListeners struct {
	port int

	mu     sync.Mutex
	byAddr map[string]int
	byPath map[string]int
	wantLo int  // allow-listed loopback cases the client test expects
	v6     bool // ::1 is up (containers often run without IPv6)
}

// reachable reports whether a loopback case's address has a listener.
func (ls *ssrfListeners) reachable(c ssrfCase) bool {
	return c.loopback() && (ls.v6 || netip.MustParseAddr(c.addr).Unmap().Is4())
}

func startSSRFListeners(t *testing.T) *ssrfListeners {
	t.Helper()
	ls := &ssrfListeners{byAddr: map[string]int{}, byPath: map[string]int{}}
	if ln, err := net.Listen("tcp", "[::1]:0"); err == nil {
		ls.v6 = true
		ln.Close()
	} else {
		t.Logf("no IPv6 loopback (%v): ::1 cases are checked without a listener", err)
	}
	for _, c := range ssrfCases() {
		if ls.reachable(c) {
			ls.wantLo++
		}
	}
	var lns []net.Listener
	for try := 0; ; try++ {
		lns = nil
		first, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := first.Addr().(*net.TCPAddr).Port
		lns = append(lns, first)
		ok := true
		others := []string{"127.0.0.2"}
		if ls.v6 {
			others = append(others, "[::1]")
		}
		for _, a := range others {
			ln, err := net.Listen("tcp", a+":"+strconv.Itoa(port))
			if err != nil {
				ok = false
				break
			}
			lns = append(lns, ln)
		}
		if ok {
			ls.port = port
			break
		}
		for _, ln := range lns {
			ln.Close()
		}
		if try == 20 {
			t.Fatal("no port free on 127.0.0.1, 127.0.0.2 and ::1 at once")
		}
	}
	srv := &http.Server{Handler: http.HandlerFunc(ls.serve), ReadHeaderTimeout: 5 * time.Second}
	for _, ln := range lns {
		go func() { _ = srv.Serve(ln) }()
	}
	t.Cleanup(func() { _ = srv.Close() })
	return ls
}

func (ls *ssrfListeners) serve(w http.ResponseWriter, r *http.Request) {
	local := r.Context().Value(http.LocalAddrContextKey).(net.Addr).(*net.TCPAddr)
	a, _ := netip.AddrFromSlice(local.IP)
	ls.mu.Lock()
	ls.byAddr[a.Unmap().String()]++
	ls.byPath[r.URL.Path]++
	ls.mu.Unlock()
	switch {
	case strings.HasPrefix(r.URL.Path, "/status/"):
		// A fresh connection per request, so the next attempt resolves and
		// dials again instead of reusing this one.
		w.Header().Set("Connection", "close")
		code, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/status/"))
		w.WriteHeader(code)
	case strings.HasPrefix(r.URL.Path, "/redirect/"):
		code, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/redirect/"))
		w.Header().Set("Location", r.URL.Query().Get("to"))
		w.WriteHeader(code)
	}
}

func (ls *ssrfListeners) hits(addr string) int {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return ls.byAddr[addr]
}

func (ls *ssrfListeners) pathHits(p string) int {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return ls.byPath[p]
}

func (ls *ssrfListeners) total() int {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	n := 0
	for _, v := range ls.byAddr {
		n += v
	}
	return n
}

func (ls *ssrfListeners) expectedLoopbackHits() int { return ls.wantLo }

func (ls *ssrfListeners) String() string {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return fmt.Sprintf("requests by address %v, by path %v", ls.byAddr, ls.byPath)
}

// fakeDNS is a DNS server on 127.0.0.1 answering A and AAAA queries from
// a table; a name can have a sequence of answers (the last repeats), for
// rebinding. Unknown names are NXDOMAIN.
type fakeDNS struct {
	pc net.PacketConn

	mu      sync.Mutex
	answers map[string][][]netip.Addr // name → answer sets, in order
	asked   map[string]int            // name/type → queries so far
}

func startFakeDNS(t *testing.T) *fakeDNS {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &fakeDNS{pc: pc, answers: map[string][][]netip.Addr{}, asked: map[string]int{}}
	t.Cleanup(func() { pc.Close() })
	go d.serve()
	return d
}

// set makes addrs the answer to name, replacing any sequence.
func (d *fakeDNS) set(name string, addrs ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.answers[name] = [][]netip.Addr{parseAddrs(addrs)}
	delete(d.asked, name+"/A")
	delete(d.asked, name+"/AAAA")
}

// then appends an answer set: the next query of each type gets it.
func (d *fakeDNS) then(name string, addrs ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.answers[name] = append(d.answers[name], parseAddrs(addrs))
}

func parseAddrs(ss []string) []netip.Addr {
	var as []netip.Addr
	for _, s := range ss {
		as = append(as, netip.MustParseAddr(s))
	}
	return as
}

// resolver is Go's own resolver, sending every query to this server.
func (d *fakeDNS) resolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var nd net.Dialer
		return nd.DialContext(ctx, "udp", d.pc.LocalAddr().String())
	}}
}

func (d *fakeDNS) serve() {
	buf := make([]byte, 1500)
	for {
		n, from, err := d.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		if resp := d.answer(buf[:n]); resp != nil {
			_, _ = d.pc.WriteTo(resp, from)
		}
	}
}

// answer builds the response to one query (RFC 1035 §4.1), or nil to drop it.
func (d *fakeDNS) answer(q []byte) []byte {
	if len(q) < 12 || binary.BigEndian.Uint16(q[4:]) != 1 {
		return nil
	}
	i := 12
	var labels []string
	for {
		if i >= len(q) {
			return nil
		}
		l := int(q[i])
		i++
		if l == 0 {
			break
		}
		if l&0xc0 != 0 || i+l > len(q) {
			return nil
		}
		labels = append(labels, string(q[i:i+l]))
		i += l
	}
	if i+4 > len(q) {
		return nil
	}
	qtype := binary.BigEndian.Uint16(q[i:])
	end := i + 4
	name := strings.ToLower(strings.Join(labels, "."))

	d.mu.Lock()
	sets, known := d.answers[name]
	var addrs []netip.Addr
	if known {
		key := name + "/" + map[uint16]string{1: "A", 28: "AAAA"}[qtype]
		k := d.asked[key]
		d.asked[key] = k + 1
		addrs = sets[min(k, len(sets)-1)]
	}
	d.mu.Unlock()

	var rrs [][]byte
	for _, a := range addrs {
		switch {
		case qtype == 1 && a.Is4():
			rrs = append(rrs, a.AsSlice())
		case qtype == 28 && a.Is6():
			rrs = append(rrs, a.AsSlice())
		}
	}
	resp := make([]byte, 12, 512)
	copy(resp, q[:2])                 // id
	resp[2] = 0x80 | 0x04 | q[2]&0x79 // QR, AA, the query's opcode and RD
	resp[3] = 0x80                    // RA, NOERROR
	if !known {
		resp[3] |= 3 // NXDOMAIN
	}
	binary.BigEndian.PutUint16(resp[4:], 1)
	binary.BigEndian.PutUint16(resp[6:], uint16(len(rrs)))
	resp = append(resp, q[12:end]...)
	for _, rd := range rrs {
		resp = append(resp, 0xc0, 12) // the name: a pointer to the question's
		resp = binary.BigEndian.AppendUint16(resp, qtype)
		resp = binary.BigEndian.AppendUint16(resp, 1) // IN
		resp = binary.BigEndian.AppendUint32(resp, 0) // TTL 0: never cache
		resp = binary.BigEndian.AppendUint16(resp, uint16(len(rd)))
		resp = append(resp, rd...)
	}
	return resp
}
