package dispatch

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"testing"
)

func TestGuardRefusesSpecialAddresses(t *testing.T) {
	g := Guard{}
	for _, s := range []string{
		"127.0.0.1", "127.255.0.9", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254",
		"169.254.0.1", "0.0.0.0", "100.64.0.1", "224.0.0.1", "255.255.255.255", "::1", "::",
		"fc00::1", "fd12:3456::1", "fe80::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254",
		"64:ff9b::7f00:1", "2002:7f00:1::1", "ff02::1",
	} {
		if err := g.CheckAddr(netip.MustParseAddr(s)); !errors.Is(err, ErrForbiddenTarget) {
			t.Errorf("%s: want refusal, got %v", s, err)
		}
	}
	for _, s := range []string{"93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"} {
		if err := g.CheckAddr(netip.MustParseAddr(s)); err != nil {
			t.Errorf("%s: want allowed, got %v", s, err)
		}
	}
}

func TestGuardAllowList(t *testing.T) {
	g := Guard{Allowed: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
	if err := g.CheckAddr(netip.MustParseAddr("127.0.0.1")); err != nil {
		t.Errorf("allow-listed loopback refused: %v", err)
	}
	if err := g.CheckAddr(netip.MustParseAddr("::ffff:127.0.0.1")); err != nil {
		t.Errorf("IPv4-mapped allow-listed loopback refused: %v", err)
	}
	if err := g.CheckAddr(netip.MustParseAddr("10.0.0.1")); err == nil {
		t.Errorf("private address outside the allow-list accepted")
	}
}

func TestCheckURL(t *testing.T) {
	g := Guard{}
	for _, raw := range []string{"http://127.0.0.1/", "http://[::1]:80/", "http://localhost:8080/", "http://api.localhost/", "http://169.254.169.254/latest/meta-data", "http://[::ffff:10.0.0.1]/"} {
		u, _ := url.Parse(raw)
		if err := g.CheckURL(u); err == nil {
			t.Errorf("%s accepted", raw)
		}
	}
	u, _ := url.Parse("http://example.com/hook")
	if err := g.CheckURL(u); err != nil {
		t.Errorf("a name is checked at dial time, not at enqueue: %v", err)
	}
}

// The guard is in the dialer: a hostname resolving to loopback is refused
// on the address actually dialled.
func TestClientRefusesDialledAddress(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())

	c := NewHTTPClient(Guard{})
	req, _ := http.NewRequestWithContext(context.Background(), "GET", "http://localhost:"+port+"/", nil)
	_, err := c.Do(req)
	if !errors.Is(err, ErrForbiddenTarget) {
		t.Fatalf("want ErrForbiddenTarget dialling localhost, got %v", err)
	}
	allowed := NewHTTPClient(Guard{Allowed: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}})
	resp, err := allowed.Do(req.Clone(context.Background()))
	if err != nil {
		t.Fatalf("allow-listed: %v", err)
	}
	resp.Body.Close()
}

func TestClientDoesNotFollowRedirects(t *testing.T) {
	hits := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits++
		http.Redirect(w, r, "/elsewhere", http.StatusFound)
	}))
	defer srv.Close()
	c := NewHTTPClient(Guard{Allowed: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	resp, err := c.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || hits != 1 {
		t.Errorf("status %d after %d requests; want 302 after 1", resp.StatusCode, hits)
	}
}

func TestTraceparent(t *testing.T) {
	tp := traceparent("0192f0c1-7b7a-7c4e-9a1b-123456789abc", 1)
	if len(tp) != 55 || tp[:3] != "00-" || tp[3:35] != "0192f0c17b7a7c4e9a1b123456789abc" {
		t.Errorf("traceparent %q", tp)
	}
	if traceparent("0192f0c1-7b7a-7c4e-9a1b-123456789abc", 2) == tp {
		t.Errorf("span id should vary by attempt")
	}
}
