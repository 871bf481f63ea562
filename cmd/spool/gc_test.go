package main

import (
	"runtime/debug"
	"testing"
)

// TestTuneGC: serve raises the GC target to defaultGCPercent unless GOGC
// is set, and then leaves the runtime's value alone.
func TestTuneGC(t *testing.T) {
	orig := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(orig) })

	noGOGC := func(string) (string, bool) { return "", false }
	if got := tuneGC(noGOGC); got != defaultGCPercent {
		t.Errorf("without GOGC: tuneGC = %d, want %d", got, defaultGCPercent)
	}
	if now := debug.SetGCPercent(77); now != defaultGCPercent {
		t.Errorf("without GOGC: runtime GC percent %d, want %d", now, defaultGCPercent)
	}

	// With GOGC set the runtime applied it at start (77 stands for it).
	withGOGC := func(k string) (string, bool) {
		if k == "GOGC" {
			return "77", true
		}
		return "", false
	}
	if got := tuneGC(withGOGC); got != 77 {
		t.Errorf("with GOGC: tuneGC = %d, want the runtime's 77", got)
	}
	if now := debug.SetGCPercent(100); now != 77 {
		t.Errorf("with GOGC: runtime GC percent changed to %d", now)
	}
}
