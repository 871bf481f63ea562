package dispatch

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// ErrForbiddenTarget marks a delivery refused by the SSRF guard. It is a
// permanent failure: retrying cannot make the address allowed.
var ErrForbiddenTarget = errors.New("target address not allowed")

// Guard refuses addresses a delivery must not reach unless allow-listed:
// loopback, private, link-local, cloud metadata, and other special ranges.
type Guard struct {
	Allowed []netip.Prefix
}

// denied are special-purpose ranges beyond what netip's predicates cover.
var denied = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),       // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),   // carrier-grade NAT
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
	netip.MustParsePrefix("192.0.2.0/24"),    // documentation
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
	netip.MustParsePrefix("198.51.100.0/24"), // documentation
	netip.MustParsePrefix("203.0.113.0/24"),  // documentation
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved, and broadcast
	netip.MustParsePrefix("64:ff9b::/96"),    // NAT64: may embed any IPv4 address
	netip.MustParsePrefix("64:ff9b:1::/48"),  // local-use NAT64
	netip.MustParsePrefix("2001:db8::/32"),   // documentation
	netip.MustParsePrefix("2002::/16"),       // 6to4: may embed any IPv4 address
	netip.MustParsePrefix("fec0::/10"),       // deprecated site-local
}

// CheckAddr returns an error wrapping ErrForbiddenTarget when a may not be dialled.
func (g Guard) CheckAddr(a netip.Addr) error {
	a = a.Unmap() // ::ffff:127.0.0.1 is 127.0.0.1
	for _, p := range g.Allowed {
		if p.Contains(a) {
			return nil
		}
	}
	bad := !a.IsValid() || a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() ||
		a.IsLinkLocalMulticast() || a.IsInterfaceLocalMulticast() || a.IsMulticast() || a.IsUnspecified()
	for _, p := range denied {
		if p.Contains(a) {
			bad = true
		}
	}
	if bad {
		return fmt.Errorf("%w: %s is a loopback, private, link-local or reserved address (allow it with SPOOL_ALLOWED_TARGET_CIDRS)", ErrForbiddenTarget, a)
	}
	return nil
}

// CheckURL refuses, at enqueue time, a target whose host is a literal
// forbidden address (in any spelling net/http would dial) or "localhost".
// Names are checked again on the address actually dialled.
func (g Guard) CheckURL(u *url.URL) error {
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		if len(g.Allowed) == 0 || g.CheckAddr(netip.MustParseAddr("127.0.0.1")) != nil {
			return fmt.Errorf("%w: localhost", ErrForbiddenTarget)
		}
		return nil
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return nil // a name: checked when dialled
	}
	return g.CheckAddr(a)
}

// control runs after name resolution, on the address about to be dialled,
// so DNS rebinding between a check and the dial cannot slip through.
func (g Guard) control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: cannot parse dialled address %q", ErrForbiddenTarget, address)
	}
	return g.CheckAddr(ap.Addr())
}

// NewHTTPClient returns the client deliveries use: the SSRF guard in the
// dialer, no proxy from the environment, redirects not followed, and
// connection reuse sized for many concurrent deliveries.
func NewHTTPClient(g Guard) *http.Client {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second, Control: g.control}
	tr := &http.Transport{
		Proxy: nil, // a proxy would dial for us and defeat the guard
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		},
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 0, // the per-task timeout bounds the whole attempt
		ExpectContinueTimeout: time.Second,
	}
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}
