package webhook

// Signing is on every delivery's path and verification on every receiver's.
//
//	go test -run '^$' -bench . ./internal/webhook

import (
	"net/http"
	"strconv"
	"testing"
	"time"
)

func benchKey(b *testing.B) []byte {
	b.Helper()
	k, err := ParseKey(specKey)
	if err != nil {
		b.Fatal(err)
	}
	return k
}

func benchBodies() map[string][]byte {
	return map[string][]byte{
		"64B":   []byte(`{"seq":12345,"to":"someone@example.com","template":"welcome-v2"}`)[:64],
		"1KiB":  make([]byte, 1<<10),
		"64KiB": make([]byte, 64<<10),
	}
}

// BenchmarkSetHeaders is what the dispatcher does per attempt.
func BenchmarkSetHeaders(b *testing.B) {
	key := benchKey(b)
	ts := time.Unix(specTS, 0)
	for _, name := range []string{"64B", "1KiB", "64KiB"} {
		body := benchBodies()[name]
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			h := make(http.Header, 3)
			for i := 0; b.Loop(); i++ {
				SetHeaders(h, [][]byte{key}, "0193a4b2-7c1d-7e2f-8a3b-"+strconv.Itoa(100000000000+i), ts, body)
			}
		})
	}
}

// BenchmarkVerify is what `spool sink` (and a receiver using this package)
// does per delivery, with two keys configured (a rotation) and the match
// on the second.
func BenchmarkVerify(b *testing.B) {
	key := benchKey(b)
	other := make([]byte, len(key))
	ts := time.Unix(specTS, 0)
	for _, name := range []string{"64B", "1KiB", "64KiB"} {
		body := benchBodies()[name]
		h := Headers([][]byte{key}, specID, ts, body)
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if err := Verify([][]byte{other, key}, h, body, ts, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
