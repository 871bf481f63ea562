package dispatch

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// ErrForbiddenTarget marks a delivery refused by the SSRF guard. It is a
// permanent failure: retrying cannot make the address allowed.
var ErrForbiddenTarget = errors.New("target address not allowed")

// Guard refuses addresses a delivery must not reach unless allow-listed:
// loopback, private, link-local, cloud metadata, and other special ranges.
type Guard struct {
	Allowed []netip.Prefix
	// Resolver looks names up for the client NewHTTPClient builds; nil
	// means the system's. Whatever it answers, the address dialled is
	// checked, so a resolver cannot lead a delivery past the guard.
	Resolver *net.Resolver
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
	netip.MustParsePrefix("::/96"),           // IPv4-compatible (deprecated): ::7f00:1 embeds 127.0.0.1
	netip.MustParsePrefix("::ffff:0:0:0/96"), // IPv4-translated (SIIT): embeds any IPv4 address
	netip.MustParsePrefix("64:ff9b::/96"),    // NAT64: may embed any IPv4 address
	netip.MustParsePrefix("64:ff9b:1::/48"),  // local-use NAT64
	netip.MustParsePrefix("100::/64"),        // discard-only
	netip.MustParsePrefix("2001::/32"),       // Teredo: embeds an IPv4 address
	netip.MustParsePrefix("2001:db8::/32"),   // documentation
	netip.MustParsePrefix("2002::/16"),       // 6to4: may embed any IPv4 address
	netip.MustParsePrefix("fec0::/10"),       // deprecated site-local
}

// CheckAddr returns an error wrapping ErrForbiddenTarget when a may not be dialled.
func (g Guard) CheckAddr(a netip.Addr) error {
	// A zone names an interface, not a different address, but
	// netip.Prefix.Contains is false for every zoned address: left on, it
	// would take [2001:db8::1%eth0] out of every range below.
	a = a.WithZone("").Unmap() // ::ffff:127.0.0.1 is 127.0.0.1
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
//
// "Any spelling" covers what other software would make of the host too:
// a non-ASCII host is first mapped the way net/http maps it before dialling
// (IDNA, so fullwidth digits spell an address), and the legacy IPv4 forms
// inet_aton and the WHATWG URL standard read (127.1, 2130706433,
// 0177.0.0.1, 0x7f.0.0.1) are checked as the address they denote, even
// though Go's own resolver treats them as names it cannot resolve.
func (g Guard) CheckURL(u *url.URL) error {
	host := u.Hostname()
	if !isASCII(host) {
		// Lookup is the profile net/http applies to a non-ASCII host; when
		// it fails, the transport dials the host as given, and so do we.
		if a, err := idna.Lookup.ToASCII(host); err == nil {
			host = a
		}
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		if len(g.Allowed) == 0 || g.CheckAddr(netip.MustParseAddr("127.0.0.1")) != nil {
			return fmt.Errorf("%w: localhost", ErrForbiddenTarget)
		}
		return nil
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return g.CheckAddr(a)
	}
	if a, ok := legacyIPv4(host); ok {
		if err := g.CheckAddr(a); err != nil {
			return fmt.Errorf("%w (the host %s is a spelling of %s)", err, strconv.Quote(host), a)
		}
		return nil
	}
	return nil // a name: checked when dialled
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// legacyIPv4 reads the IPv4 spellings that inet_aton(3) and the WHATWG URL
// standard accept: one to four dot-separated numbers, each decimal, octal
// (leading 0) or hexadecimal (leading 0x), the last filling all the bytes
// left. ok is false for anything else, dotted-decimal included (netip
// reads that).
func legacyIPv4(host string) (netip.Addr, bool) {
	parts := strings.Split(host, ".")
	if len(parts) > 4 {
		return netip.Addr{}, false
	}
	var v uint64
	for i, p := range parts {
		n, ok := ipv4Number(p)
		if !ok {
			return netip.Addr{}, false
		}
		if i < len(parts)-1 {
			if n > 255 {
				return netip.Addr{}, false
			}
			v |= n << (8 * (3 - i))
			continue
		}
		if n >= 1<<(8*(5-len(parts))) {
			return netip.Addr{}, false
		}
		v |= n
	}
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), true
}

// ipv4Number reads one part of a legacy IPv4 spelling, at most 32 bits.
func ipv4Number(s string) (uint64, bool) {
	base := 10
	switch {
	case len(s) >= 2 && (s[:2] == "0x" || s[:2] == "0X"):
		s, base = s[2:], 16
		if s == "" {
			return 0, true // "0x" alone is 0 to WHATWG
		}
	case len(s) >= 2 && s[0] == '0':
		s, base = s[1:], 8
	}
	if s == "" || s[0] == '+' || s[0] == '-' {
		return 0, false
	}
	n, err := strconv.ParseUint(s, base, 32)
	return n, err == nil
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
func NewHTTPClient(g Guard) *http.Client { return newHTTPClient(g, g.control) }

// newHTTPClient is NewHTTPClient with the dialer's Control given: the SSRF
// tests wrap g.control to see every address that passed it, and to stop
// the dial when it is not on loopback.
func newHTTPClient(g Guard, control func(network, address string, c syscall.RawConn) error) *http.Client {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second, Control: control, Resolver: g.Resolver}
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
