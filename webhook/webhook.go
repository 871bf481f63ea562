// Package webhook signs and verifies HTTP deliveries following the Standard
// Webhooks specification (https://www.standardwebhooks.com): the
// webhook-id, webhook-timestamp and webhook-signature headers, with
// HMAC-SHA256 over "id.timestamp.body" and whsec_ base64 keys.
//
// Receivers of Spool's deliveries use Middleware (net/http middleware that
// verifies, restores the body and puts the webhook-id and attempt in the
// request context, with an optional duplicate check), VerifyRequest, or
// Verify on headers and body they read themselves. Every one accepts
// several keys and a webhook-signature holding several signatures, so
// Spool's signing keys rotate without a gap: the sender signs with the old
// and the new key, and the receiver moves from one to the other whenever it
// likes.
//
// Spool's dispatcher signs with SetHeaders, and `spool sink` verifies with
// Middleware, so both sides share one implementation of the spec. The
// package imports only the standard library and nothing of Spool's
// internals; it is part of Spool's public Go SDK, with the compatibility
// promise in the README.
package webhook

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Header names from the spec. http.Header canonicalises them on Set/Get.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// KeyPrefix marks a Standard Webhooks symmetric secret.
const KeyPrefix = "whsec_"

// Key sizes. The spec says keys SHOULD be 24 to 64 bytes; Spool refuses
// shorter ones (a short HMAC key is a guessable one) but accepts longer ones,
// which HMAC handles fine.
const (
	MinKeyBytes      = 24
	generatedKeySize = 32
)

// DefaultTolerance is how far a webhook-timestamp may be from the receiver's
// clock, in either direction, before Verify rejects it (the spec's 5 minutes).
const DefaultTolerance = 5 * time.Minute

// signatureVersion is the only scheme defined for symmetric keys.
const signatureVersion = "v1"

// Typed errors returned (wrapped) by Verify; test with errors.Is.
var (
	// ErrMissingHeaders: webhook-id, webhook-timestamp or webhook-signature is absent.
	ErrMissingHeaders = errors.New("webhook: missing signature headers")
	// ErrTimestamp: webhook-timestamp is malformed or outside the tolerance.
	ErrTimestamp = errors.New("webhook: timestamp invalid or outside tolerance")
	// ErrNoMatch: no signature in the header matches any key.
	ErrNoMatch = errors.New("webhook: no matching signature")
)

// ParseKey decodes a "whsec_<base64>" secret into HMAC key bytes. The prefix
// may be omitted (other Standard Webhooks libraries accept bare base64 too).
// Errors describe the problem but never contain the key.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(s, KeyPrefix)
	if s == "" {
		return nil, errors.New("signing key is empty (want whsec_<base64>)")
	}
	key, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		// Some tools strip the padding; accept that too before giving up.
		var rawErr error
		key, rawErr = base64.RawStdEncoding.DecodeString(s)
		if rawErr != nil {
			// base64's error only holds a byte offset, never the input.
			return nil, fmt.Errorf("signing key is not valid base64 after the whsec_ prefix (%v)", err)
		}
	}
	if len(key) < MinKeyBytes {
		return nil, fmt.Errorf("signing key decodes to %d bytes, want at least %d (generate one with `openssl rand -base64 32` and prefix it with whsec_)", len(key), MinKeyBytes)
	}
	return key, nil
}

// ParseKeys decodes a list of secrets, skipping blank entries (a trailing
// comma or an empty line in a keys file). A sender signs with all of them
// and a receiver accepts any of them, which is how keys are rotated. Errors
// name the entry by position.
func ParseKeys(list []string) ([][]byte, error) {
	var keys [][]byte
	for i, s := range list {
		if strings.TrimSpace(s) == "" {
			continue
		}
		k, err := ParseKey(s)
		if err != nil {
			return nil, fmt.Errorf("key %d of %d: %w", i+1, len(list), err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// GenerateKey returns a new random 32-byte key in whsec_ form.
func GenerateKey() (string, error) {
	b := make([]byte, generatedKeySize)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate key: %w", err)
	}
	return KeyPrefix + base64.StdEncoding.EncodeToString(b), nil
}

// mac computes HMAC-SHA256(key, "id.timestamp.body").
func mac(key []byte, msgID string, unix int64, body []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(msgID))
	h.Write([]byte{'.'})
	h.Write(strconv.AppendInt(nil, unix, 10))
	h.Write([]byte{'.'})
	h.Write(body)
	return h.Sum(nil)
}

// Sign returns the webhook-signature entry "v1,<base64>" for one message.
// The timestamp is truncated to whole seconds, as the header carries it.
func Sign(key []byte, msgID string, ts time.Time, body []byte) string {
	return signatureVersion + "," + base64.StdEncoding.EncodeToString(mac(key, msgID, ts.Unix(), body))
}

// Headers returns the three Standard Webhooks headers for a message signed
// with every one of keys. With no key the message is unsigned: webhook-id
// and webhook-timestamp are still set so receivers can deduplicate.
func Headers(keys [][]byte, msgID string, ts time.Time, body []byte) http.Header {
	h := make(http.Header, 3)
	SetHeaders(h, keys, msgID, ts, body)
	return h
}

// SetHeaders is Headers writing into an existing header (a request's).
// webhook-signature carries one "v1,<base64>" entry per key, space-separated,
// in the order of keys: during a rotation the sender signs with the old and
// the new key, so each receiver can switch to the new key whenever it likes
// (Verify accepts a message when any entry matches any of its keys).
func SetHeaders(h http.Header, keys [][]byte, msgID string, ts time.Time, body []byte) {
	h.Set(HeaderID, msgID)
	h.Set(HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
	var sig []byte
	for _, k := range keys {
		if len(k) == 0 {
			continue
		}
		if len(sig) > 0 {
			sig = append(sig, ' ')
		}
		sig = append(sig, signatureVersion+","...)
		sig = base64.StdEncoding.AppendEncode(sig, mac(k, msgID, ts.Unix(), body))
	}
	if len(sig) == 0 {
		h.Del(HeaderSignature)
		return
	}
	h.Set(HeaderSignature, string(sig))
}

// Verify checks a received message. It accepts when any v1 signature in the
// webhook-signature header (space-separated entries) matches any of keys,
// comparing in constant time, and the timestamp is within tolerance of now
// (tolerance <= 0 means DefaultTolerance). Errors wrap ErrMissingHeaders,
// ErrTimestamp or ErrNoMatch.
func Verify(keys [][]byte, h http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	id := h.Get(HeaderID)
	tsText := h.Get(HeaderTimestamp)
	sigs := h.Get(HeaderSignature)
	if id == "" || tsText == "" || sigs == "" {
		var missing []string
		for _, name := range []string{HeaderID, HeaderTimestamp, HeaderSignature} {
			if h.Get(name) == "" {
				missing = append(missing, name)
			}
		}
		return fmt.Errorf("%w: %s", ErrMissingHeaders, strings.Join(missing, ", "))
	}

	unix, err := parseTimestamp(tsText)
	if err != nil {
		return err
	}
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	ts := time.Unix(unix, 0)
	// Compare with Before/After rather than an absolute difference: a
	// hostile timestamp can make now.Sub(ts) saturate, and negating the
	// minimum Duration overflows.
	if ts.Before(now.Add(-tolerance)) {
		return fmt.Errorf("%w: timestamp %d is more than %s in the past", ErrTimestamp, unix, tolerance)
	}
	if ts.After(now.Add(tolerance)) {
		return fmt.Errorf("%w: timestamp %d is more than %s in the future", ErrTimestamp, unix, tolerance)
	}

	if len(keys) == 0 {
		return fmt.Errorf("%w: no verification keys configured", ErrNoMatch)
	}
	expected := make([][]byte, 0, len(keys))
	for _, k := range keys {
		expected = append(expected, mac(k, id, unix, body))
	}
	for entry := range strings.FieldsSeq(sigs) {
		version, encoded, ok := strings.Cut(entry, ",")
		if !ok || version != signatureVersion {
			continue // other schemes (v1a asymmetric) are not ours to check
		}
		got, err := base64.StdEncoding.DecodeString(encoded)
		if err != nil || len(got) != sha256.Size {
			continue
		}
		for _, want := range expected {
			if hmac.Equal(got, want) {
				return nil
			}
		}
	}
	return ErrNoMatch
}

// parseTimestamp accepts only decimal unix seconds, as the spec defines.
func parseTimestamp(s string) (int64, error) {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("%w: %q is not unix seconds", ErrTimestamp, truncate(s, 32))
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: %q is out of range", ErrTimestamp, truncate(s, 32))
	}
	return n, nil
}

// truncate keeps error messages one short line whatever a sender put in a header.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
