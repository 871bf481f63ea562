package webhook

import (
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The example from the Standard Webhooks specification, checked once with
// `openssl dgst -sha256 -hmac <key bytes> -binary | base64`.
const (
	specKey  = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	specID   = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	specTS   = 1614265330
	specBody = `{"test": 2432232314}`
	specSig  = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

// A second vector of our own, computed with:
//
//	printf '%s' '01890a5d-ac96-774b-bcce-b302099a8057.1700000000.hello, spool' |
//	  openssl dgst -sha256 -hmac 'spool-test-key-0123456789abcdef' -binary | base64
const (
	ownKey  = "whsec_c3Bvb2wtdGVzdC1rZXktMDEyMzQ1Njc4OWFiY2RlZg=="
	ownID   = "01890a5d-ac96-774b-bcce-b302099a8057"
	ownTS   = 1700000000
	ownBody = "hello, spool"
	ownSig  = "v1,2bfmnef05wr0ebgrE8UBM60U9+nq1lrXtHoUjWiF4xo="
)

func mustKey(t testing.TB, s string) []byte {
	t.Helper()
	k, err := ParseKey(s)
	if err != nil {
		t.Fatalf("ParseKey: %v", err)
	}
	return k
}

func newKey(t testing.TB) []byte {
	t.Helper()
	s, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return mustKey(t, s)
}

func TestSignKnownAnswers(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, key, id string
		ts            int64
		body, want    string
	}{
		{"spec example", specKey, specID, specTS, specBody, specSig},
		{"openssl vector", ownKey, ownID, ownTS, ownBody, ownSig},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			got := Sign(mustKey(t, c.key), c.id, time.Unix(c.ts, 0), []byte(c.body))
			if got != c.want {
				t.Fatalf("Sign = %s, want %s", got, c.want)
			}
		})
	}
}

func TestHeadersRoundTrip(t *testing.T) {
	t.Parallel()
	key := mustKey(t, specKey)
	now := time.Unix(specTS, 999_000_000) // sub-second part is dropped
	h := Headers([][]byte{key}, specID, now, []byte(specBody))
	if got := h.Get("Webhook-Id"); got != specID {
		t.Errorf("webhook-id = %q", got)
	}
	if got := h.Get("Webhook-Timestamp"); got != strconv.Itoa(specTS) {
		t.Errorf("webhook-timestamp = %q", got)
	}
	if got := h.Get("Webhook-Signature"); got != specSig {
		t.Errorf("webhook-signature = %q, want %q", got, specSig)
	}
	if err := Verify([][]byte{key}, h, []byte(specBody), now, 0); err != nil {
		t.Fatalf("Verify: %v", err)
	}
}

func TestHeadersUnsigned(t *testing.T) {
	t.Parallel()
	h := http.Header{}
	h.Set(HeaderSignature, "stale")
	SetHeaders(h, nil, "id-1", time.Unix(10, 0), []byte("x"))
	if h.Get(HeaderID) != "id-1" || h.Get(HeaderTimestamp) != "10" {
		t.Fatalf("id/timestamp not set: %v", h)
	}
	if _, ok := h[http.CanonicalHeaderKey(HeaderSignature)]; ok {
		t.Fatalf("unsigned message kept a signature header: %v", h)
	}
}

// TestHeadersEveryKey: during a rotation a message carries one v1 signature
// per key, in the order of the keys, so a receiver that knows only the old
// key, only the new one, or both accepts it, and one that knows neither does not.
func TestHeadersEveryKey(t *testing.T) {
	t.Parallel()
	oldKey, newK, otherKey := newKey(t), newKey(t), newKey(t)
	now := time.Now()
	body := []byte("payload")
	h := Headers([][]byte{newK, oldKey}, "m", now, body)
	want := Sign(newK, "m", now, body) + " " + Sign(oldKey, "m", now, body)
	if got := h.Get(HeaderSignature); got != want {
		t.Fatalf("webhook-signature = %q, want %q", got, want)
	}
	for name, keys := range map[string][][]byte{"old only": {oldKey}, "new only": {newK}, "both": {oldKey, newK}} {
		if err := Verify(keys, h, body, now, 0); err != nil {
			t.Errorf("receiver with %s: %v", name, err)
		}
	}
	if err := Verify([][]byte{otherKey}, h, body, now, 0); !errors.Is(err, ErrNoMatch) {
		t.Errorf("receiver with another key = %v, want ErrNoMatch", err)
	}
	// Empty keys are skipped rather than signing with an empty HMAC key.
	if got := Headers([][]byte{nil, newK}, "m", now, body).Get(HeaderSignature); got != Sign(newK, "m", now, body) {
		t.Errorf("with an empty key: %q", got)
	}
}

func TestVerifyTamper(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	now := time.Now()
	body := []byte(`{"n":1}`)
	good := func() http.Header { return Headers([][]byte{key}, "task-1", now, body) }

	cases := []struct {
		name   string
		mutate func(h http.Header) []byte
		want   error
	}{
		{"body changed", func(h http.Header) []byte { return []byte(`{"n":2}`) }, ErrNoMatch},
		{"body extended", func(h http.Header) []byte { return append(append([]byte{}, body...), ' ') }, ErrNoMatch},
		{"id changed", func(h http.Header) []byte { h.Set(HeaderID, "task-2"); return body }, ErrNoMatch},
		{"timestamp changed", func(h http.Header) []byte {
			h.Set(HeaderTimestamp, strconv.FormatInt(now.Unix()+1, 10))
			return body
		}, ErrNoMatch},
		{"signature bit flipped", func(h http.Header) []byte {
			sig := h.Get(HeaderSignature)
			raw, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(sig, "v1,"))
			raw[0] ^= 1
			h.Set(HeaderSignature, "v1,"+base64.StdEncoding.EncodeToString(raw))
			return body
		}, ErrNoMatch},
		{"wrong version", func(h http.Header) []byte {
			h.Set(HeaderSignature, "v2,"+strings.TrimPrefix(h.Get(HeaderSignature), "v1,"))
			return body
		}, ErrNoMatch},
		{"truncated signature", func(h http.Header) []byte {
			h.Set(HeaderSignature, h.Get(HeaderSignature)[:20])
			return body
		}, ErrNoMatch},
		{"missing id", func(h http.Header) []byte { h.Del(HeaderID); return body }, ErrMissingHeaders},
		{"missing timestamp", func(h http.Header) []byte { h.Del(HeaderTimestamp); return body }, ErrMissingHeaders},
		{"missing signature", func(h http.Header) []byte { h.Del(HeaderSignature); return body }, ErrMissingHeaders},
		{"timestamp not a number", func(h http.Header) []byte { h.Set(HeaderTimestamp, "12.5"); return body }, ErrTimestamp},
		{"timestamp negative", func(h http.Header) []byte { h.Set(HeaderTimestamp, "-5"); return body }, ErrTimestamp},
		{"timestamp overflows", func(h http.Header) []byte {
			h.Set(HeaderTimestamp, "99999999999999999999999")
			return body
		}, ErrTimestamp},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			h := good()
			b := c.mutate(h)
			err := Verify([][]byte{key}, h, b, now, 0)
			if !errors.Is(err, c.want) {
				t.Fatalf("Verify = %v, want %v", err, c.want)
			}
		})
	}
	// The untouched message passes, so the failures above come from the mutation.
	if err := Verify([][]byte{key}, good(), body, now, 0); err != nil {
		t.Fatalf("untampered: %v", err)
	}
}

func TestVerifyRotation(t *testing.T) {
	t.Parallel()
	oldKey, newK, otherKey := newKey(t), newKey(t), newKey(t)
	now := time.Now()
	body := []byte("payload")

	// Sender still on the old key; receiver already knows both.
	h := Headers([][]byte{oldKey}, "m", now, body)
	if err := Verify([][]byte{newK, oldKey}, h, body, now, 0); err != nil {
		t.Fatalf("old key against [new old]: %v", err)
	}
	// Sender moved to the new key; receiver knows both.
	h = Headers([][]byte{newK}, "m", now, body)
	if err := Verify([][]byte{newK, oldKey}, h, body, now, 0); err != nil {
		t.Fatalf("new key against [new old]: %v", err)
	}
	// Receiver that dropped the old key rejects old-key messages.
	h = Headers([][]byte{oldKey}, "m", now, body)
	if err := Verify([][]byte{newK}, h, body, now, 0); !errors.Is(err, ErrNoMatch) {
		t.Fatalf("old key against [new] = %v, want ErrNoMatch", err)
	}
	// Several signatures in one header (a sender signing with two keys):
	// any match accepts, garbage entries are skipped.
	sigOther := Sign(otherKey, "m", now, body)
	sigOld := Sign(oldKey, "m", now, body)
	h.Set(HeaderSignature, "v1a,bm9wZQ== "+sigOther+"  v1,!!notbase64 "+sigOld)
	if err := Verify([][]byte{newK, oldKey}, h, body, now, 0); err != nil {
		t.Fatalf("multi-signature header: %v", err)
	}
	h.Set(HeaderSignature, sigOther)
	if err := Verify([][]byte{newK, oldKey}, h, body, now, 0); !errors.Is(err, ErrNoMatch) {
		t.Fatalf("unknown key = %v, want ErrNoMatch", err)
	}
	if err := Verify(nil, h, body, now, 0); !errors.Is(err, ErrNoMatch) {
		t.Fatalf("no keys = %v, want ErrNoMatch", err)
	}
}

func TestVerifyTimestampSkew(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	now := time.Unix(1_700_000_000, 0)
	body := []byte("b")
	cases := []struct {
		name      string
		skew      time.Duration // signing time minus now
		tolerance time.Duration
		ok        bool
	}{
		{"exact", 0, 0, true},
		{"4m59s old, default tolerance", -(5*time.Minute - time.Second), 0, true},
		{"5m old is the edge, accepted", -5 * time.Minute, 0, true},
		{"5m1s old", -(5*time.Minute + time.Second), 0, false},
		{"5m1s ahead", 5*time.Minute + time.Second, 0, false},
		{"4m ahead", 4 * time.Minute, 0, true},
		{"custom tolerance 10s, 11s old", -11 * time.Second, 10 * time.Second, false},
		{"custom tolerance 10s, 9s ahead", 9 * time.Second, 10 * time.Second, true},
		{"a year old", -365 * 24 * time.Hour, 0, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			h := Headers([][]byte{key}, "id", now.Add(c.skew), body)
			err := Verify([][]byte{key}, h, body, now, c.tolerance)
			if c.ok && err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if !c.ok && !errors.Is(err, ErrTimestamp) {
				t.Fatalf("Verify = %v, want ErrTimestamp", err)
			}
		})
	}
}

func TestParseKey(t *testing.T) {
	t.Parallel()
	raw := []byte("spool-test-key-0123456789abcdef")
	std := base64.StdEncoding.EncodeToString(raw)
	unpadded := base64.RawStdEncoding.EncodeToString(raw)
	for _, s := range []string{"whsec_" + std, std, "  whsec_" + std + "\n", "whsec_" + unpadded} {
		k, err := ParseKey(s)
		if err != nil {
			t.Fatalf("ParseKey(%q): %v", s, err)
		}
		if string(k) != string(raw) {
			t.Fatalf("ParseKey(%q) = %q", s, k)
		}
	}

	secret := "whsec_c2hvcnQ=" // "short", 5 bytes
	bad := []struct{ in, wantSub string }{
		{"", "empty"},
		{"whsec_", "empty"},
		{"whsec_***not*base64***", "not valid base64"},
		{secret, "5 bytes"},
	}
	for _, c := range bad {
		_, err := ParseKey(c.in)
		if err == nil {
			t.Fatalf("ParseKey(%q) succeeded", c.in)
		}
		if !strings.Contains(err.Error(), c.wantSub) {
			t.Errorf("ParseKey(%q) = %q, want it to mention %q", c.in, err, c.wantSub)
		}
		if c.in != "" && strings.Contains(err.Error(), strings.TrimPrefix(c.in, "whsec_")) && strings.TrimPrefix(c.in, "whsec_") != "" {
			t.Errorf("error echoes the key: %q", err)
		}
	}
}

func TestParseKeys(t *testing.T) {
	t.Parallel()
	a, _ := GenerateKey()
	b, _ := GenerateKey()
	keys, err := ParseKeys([]string{a, "", "  ", b})
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || string(keys[0]) != string(mustKey(t, a)) || string(keys[1]) != string(mustKey(t, b)) {
		t.Fatalf("ParseKeys kept wrong keys: %d", len(keys))
	}
	_, err = ParseKeys([]string{a, "whsec_bm9wZQ=="})
	if err == nil || !strings.Contains(err.Error(), "key 2 of 2") {
		t.Fatalf("ParseKeys error = %v, want it to name key 2", err)
	}
	keys, err = ParseKeys(nil)
	if err != nil || len(keys) != 0 {
		t.Fatalf("ParseKeys(nil) = %v, %v", keys, err)
	}
}

func TestGenerateKey(t *testing.T) {
	t.Parallel()
	a, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := GenerateKey()
	if a == b {
		t.Fatal("two generated keys are equal")
	}
	if !strings.HasPrefix(a, KeyPrefix) {
		t.Fatalf("key %q lacks prefix", a)
	}
	if k := mustKey(t, a); len(k) != generatedKeySize {
		t.Fatalf("generated key has %d bytes", len(k))
	}
}

// FuzzVerify feeds arbitrary headers and bodies to Verify: it must never
// panic, must accept a message signed with the key whatever its id and body,
// and must reject that message once the body changes.
func FuzzVerify(f *testing.F) {
	f.Add(specID, strconv.Itoa(specTS), specSig, []byte(specBody))
	f.Add("", "", "", []byte{})
	f.Add("id", "1614265330", "v1,", []byte("x"))
	f.Add("id", "-1", "v1,AAAA v1a,BBBB", []byte(nil))
	f.Add("id.with.dots", "99999999999999999999", "v1,"+strings.Repeat("A", 44), []byte("\x00\xff"))
	key := mustKey(f, specKey)
	keys := [][]byte{key}
	now := time.Unix(specTS, 0)

	f.Fuzz(func(t *testing.T, id, ts, sig string, body []byte) {
		h := http.Header{}
		h.Set(HeaderID, id)
		h.Set(HeaderTimestamp, ts)
		h.Set(HeaderSignature, sig)
		_ = Verify(keys, h, body, now, 0)

		if id == "" {
			return
		}
		signed := Headers([][]byte{key}, id, now, body)
		if err := Verify(keys, signed, body, now, 0); err != nil {
			t.Fatalf("signed message rejected: %v", err)
		}
		tampered := append(append([]byte{}, body...), 'x')
		if err := Verify(keys, signed, tampered, now, 0); !errors.Is(err, ErrNoMatch) {
			t.Fatalf("tampered body = %v, want ErrNoMatch", err)
		}
	})
}
