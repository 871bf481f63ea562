package ui

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/spoolhq/spool/internal/auth"
)

// A session cookie holds no secret and needs no shared state: its value is
// "<key id>.<expiry>.<mac>", where the key id is a short hash of the API key
// it was signed in with (never the key), the expiry is Unix seconds, and the
// mac is HMAC-SHA256 over both with a key derived from that API key's
// secret. Every replica has the same SPOOL_API_KEYS, so every replica
// verifies it; removing a key from the list revokes its sessions, and the
// role is read from the key list at each request, so a changed role holds
// at once.

const (
	cookieName = "spool_session"
	keyIDBytes = 8
	// sessionInfo and csrfInfo separate the two uses of a key's MAC key.
	sessionInfo = "spool-ui-session"
	csrfInfo    = "spool-ui-csrf"
)

var (
	errNoSession      = errors.New("no session")
	errSessionExpired = errors.New("session expired")
	errSessionInvalid = errors.New("session not valid")
)

// uiKey is one API key as the dashboard needs it.
type uiKey struct {
	id   string // hex of the first keyIDBytes of SHA-256(secret)
	mac  []byte // HMAC-SHA256(secret, sessionInfo): signs this key's sessions
	role auth.Role
}

// session is a verified sign-in.
type session struct {
	key     *uiKey // nil in open mode (no keys configured)
	role    auth.Role
	expires time.Time
}

// sessions signs and verifies session cookies and CSRF tokens.
type sessions struct {
	keys []uiKey
	ring *auth.Keyring
	// open is the per-process secret of open mode (no API keys): CSRF
	// tokens then need no session, and several replicas without keys is not
	// a supported setup, so no shared state is needed either.
	open []byte
	ttl  time.Duration
}

func newSessions(keys []auth.Key, ttl time.Duration) (*sessions, error) {
	ring, err := auth.NewKeyring(keys)
	if err != nil {
		return nil, err
	}
	s := &sessions{ring: ring, ttl: ttl, open: make([]byte, 32)}
	if _, err := rand.Read(s.open); err != nil {
		return nil, err
	}
	for _, k := range keys {
		sum := sha256.Sum256([]byte(k.Secret))
		m := hmac.New(sha256.New, []byte(k.Secret))
		m.Write([]byte(sessionInfo))
		s.keys = append(s.keys, uiKey{id: hex.EncodeToString(sum[:keyIDBytes]), mac: m.Sum(nil), role: k.Role})
	}
	return s, nil
}

// openMode reports whether no keys are configured: the dashboard is then as
// open as the API (which cmd allows only on loopback or when told to).
func (s *sessions) openMode() bool { return len(s.keys) == 0 }

// signIn checks a presented API key and returns the cookie value for it.
func (s *sessions) signIn(secret string, now time.Time) (string, session, bool) {
	role, ok := s.ring.Lookup(secret)
	if !ok {
		return "", session{}, false
	}
	sum := sha256.Sum256([]byte(secret))
	id := hex.EncodeToString(sum[:keyIDBytes])
	k := s.byID(id)
	if k == nil {
		return "", session{}, false
	}
	exp := now.Add(s.ttl).Truncate(time.Second)
	payload := id + "." + strconv.FormatInt(exp.Unix(), 10)
	return payload + "." + sign(k.mac, sessionInfo, payload), session{key: k, role: role, expires: exp}, true
}

// verify reads a cookie value.
func (s *sessions) verify(value string, now time.Time) (session, error) {
	if value == "" {
		return session{}, errNoSession
	}
	parts := strings.Split(value, ".")
	if len(parts) != 3 {
		return session{}, errSessionInvalid
	}
	k := s.byID(parts[0])
	if k == nil {
		return session{}, errSessionInvalid // an unknown or removed key
	}
	want := sign(k.mac, sessionInfo, parts[0]+"."+parts[1])
	if subtle.ConstantTimeCompare([]byte(want), []byte(parts[2])) != 1 {
		return session{}, errSessionInvalid
	}
	exp, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil {
		return session{}, errSessionInvalid
	}
	if !now.Before(time.Unix(exp, 0)) {
		return session{}, errSessionExpired
	}
	return session{key: k, role: k.role, expires: time.Unix(exp, 0)}, nil
}

func (s *sessions) byID(id string) *uiKey {
	for i := range s.keys {
		if subtle.ConstantTimeCompare([]byte(s.keys[i].id), []byte(id)) == 1 {
			return &s.keys[i]
		}
	}
	return nil
}

// csrfToken is the token every state-changing form of a session carries:
// an HMAC of the session (key id and expiry) under the key's MAC key, so it
// changes with each sign-in and any replica can check it; in open mode an
// HMAC under the process secret.
func (s *sessions) csrfToken(sess session) string {
	if sess.key == nil {
		return sign(s.open, csrfInfo, "open")
	}
	return sign(sess.key.mac, csrfInfo, sess.key.id+"."+strconv.FormatInt(sess.expires.Unix(), 10))
}

func (s *sessions) checkCSRF(sess session, token string) bool {
	return token != "" && subtle.ConstantTimeCompare([]byte(s.csrfToken(sess)), []byte(token)) == 1
}

func sign(key []byte, info, payload string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(info))
	m.Write([]byte{0})
	m.Write([]byte(payload))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}
