package task

import (
	"net/http"
	"testing"
	"time"
)

func TestBackoffGrowsAndIsCapped(t *testing.T) {
	b := Backoff{Min: time.Second, Max: time.Minute}
	for attempt, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 7: time.Minute, 50: time.Minute} {
		for i := 0; i < 50; i++ {
			d := b.Delay(attempt)
			if d < want/2 || d > want {
				t.Fatalf("attempt %d: %s not in [%s, %s]", attempt, d, want/2, want)
			}
		}
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if d, ok := RetryAfter("120", now); !ok || d != 2*time.Minute {
		t.Errorf("seconds: %v %v", d, ok)
	}
	if d, ok := RetryAfter(now.Add(30*time.Second).Format(http.TimeFormat), now); !ok || d != 30*time.Second {
		t.Errorf("date: %v %v", d, ok)
	}
	for _, bad := range []string{"", "soon", "-5"} {
		if _, ok := RetryAfter(bad, now); ok {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestRetryable(t *testing.T) {
	for code, want := range map[int]bool{429: true, 500: true, 503: true, 400: false, 404: false, 410: false, 301: false} {
		if Retryable(code) != want {
			t.Errorf("%d: want %v", code, want)
		}
	}
}

func TestStates(t *testing.T) {
	for _, s := range States {
		got, err := ParseState(string(s))
		if err != nil || got != s {
			t.Errorf("%s: %v", s, err)
		}
		if s.Final() && s.Pending() {
			t.Errorf("%s both final and pending", s)
		}
	}
	if _, err := ParseState("done"); err == nil {
		t.Error("unknown state accepted")
	}
}
