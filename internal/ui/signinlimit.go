package ui

import (
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Failed sign-ins are limited per client address: signInBurst wrong keys,
// then one more every signInRefill, so guessing a key from one address
// runs at ten tries a minute. While an address is limited its sign-ins are
// refused without checking the key (a right key included), answered 429
// with Retry-After. Behind a reverse proxy every user shares the proxy's
// address: a flood of wrong keys then holds up everyone's sign-in for a
// minute at most, never the signed-in sessions or the API.
const (
	signInBurst     = 10
	signInRefill    = 6 * time.Second
	signInAddresses = 10_000 // addresses tracked at most; past it, the fullest buckets are forgotten
)

// signInLimiter holds a token bucket of failed sign-ins per client address.
type signInLimiter struct {
	mu sync.Mutex
	m  map[string]*rate.Limiter
}

func newSignInLimiter() *signInLimiter {
	return &signInLimiter{m: make(map[string]*rate.Limiter)}
}

// clientAddr is the address a request came from, without its port.
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// wait reports how long addr must wait before its next sign-in may be
// checked: 0 when it may be now.
func (l *signInLimiter) wait(addr string, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	lim := l.m[addr]
	if lim == nil {
		return 0
	}
	tokens := lim.TokensAt(now)
	if tokens >= 1 {
		return 0
	}
	return time.Duration((1 - tokens) * float64(signInRefill))
}

// failed counts a failed sign-in from addr.
func (l *signInLimiter) failed(addr string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	lim := l.m[addr]
	if lim == nil {
		if len(l.m) >= signInAddresses {
			l.forgetFull(now)
		}
		lim = rate.NewLimiter(rate.Every(signInRefill), signInBurst)
		l.m[addr] = lim
	}
	lim.AllowN(now, 1)
}

// forgetFull drops the addresses whose bucket has refilled (no recent
// failures), and if none has, all of them: the map stays bounded whatever
// the number of addresses trying.
func (l *signInLimiter) forgetFull(now time.Time) {
	for addr, lim := range l.m {
		if lim.TokensAt(now) >= signInBurst {
			delete(l.m, addr)
		}
	}
	if len(l.m) >= signInAddresses {
		clear(l.m)
	}
}
