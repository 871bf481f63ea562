package ui

import (
	"strconv"
	"testing"
	"time"
)

// TestSignInLimiterPerAddressAndBounded: one address's failures do not
// limit another's, the wait shrinks as the bucket refills, and the number
// of addresses tracked stays bounded however many try.
func TestSignInLimiterPerAddressAndBounded(t *testing.T) {
	l := newSignInLimiter()
	now := time.Unix(1_700_000_000, 0)
	for range signInBurst {
		if w := l.wait("192.0.2.1", now); w != 0 {
			t.Fatalf("limited after fewer than %d failures: wait %s", signInBurst, w)
		}
		l.failed("192.0.2.1", now)
	}
	if w := l.wait("192.0.2.1", now); w <= 0 || w > signInRefill {
		t.Errorf("after %d failures: wait %s, want (0, %s]", signInBurst, w, signInRefill)
	}
	if w := l.wait("192.0.2.2", now); w != 0 {
		t.Errorf("another address waits %s", w)
	}
	if w := l.wait("192.0.2.1", now.Add(signInRefill)); w != 0 {
		t.Errorf("one refill later: wait %s, want 0", w)
	}
	for i := range signInAddresses + 10 {
		l.failed("198.51.100."+strconv.Itoa(i), now)
	}
	if n := len(l.m); n > signInAddresses {
		t.Errorf("%d addresses tracked, want at most %d", n, signInAddresses)
	}
}
