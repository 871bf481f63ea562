// Package auth owns API key roles: what a bearer key may do (read, write,
// admin), how an entry of SPOOL_API_KEYS names its role ("k1:read"), and the
// constant-time lookup of a presented key. The API and the dashboard both
// authorize with it. It imports nothing of Spool's and never puts a key in
// an error or a String.
package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"
)

// Role is what a key may do. Roles are ordered: each allows what the ones
// below it allow.
type Role uint8

const (
	// None allows nothing; it is the zero value so a forgotten role denies.
	None Role = iota
	// Read sees tasks, queues and destinations, with target header values redacted.
	Read
	// Write also enqueues, cancels, retries and changes queue and destination settings.
	Write
	// Admin also sees secrets: target header values (?view=full).
	Admin
)

var names = [...]string{None: "none", Read: "read", Write: "write", Admin: "admin"}

// String is the role's name as written after the colon of a key entry.
func (r Role) String() string {
	if int(r) < len(names) {
		return names[r]
	}
	return fmt.Sprintf("Role(%d)", r)
}

// Allows reports whether a key with role r may do what needs need.
func (r Role) Allows(need Role) bool { return r >= need && r != None }

// ParseRole parses "read", "write" or "admin".
func ParseRole(s string) (Role, error) {
	switch s {
	case "read":
		return Read, nil
	case "write":
		return Write, nil
	case "admin":
		return Admin, nil
	}
	return None, errors.New("unknown role; want read, write or admin")
}

// Key is a bearer key and its role.
type Key struct {
	Secret string
	Role   Role
}

// String and GoString never show the secret.
func (k Key) String() string   { return "[redacted]:" + k.Role.String() }
func (k Key) GoString() string { return k.String() }

// ParseKey splits an entry "secret:role" (role read, write or admin); an
// entry without a colon is an admin key, so keys from before roles keep
// working. Anything after the last colon that is not a role is an error:
// a key that itself contains a colon must be given a role. The error never
// contains any part of the entry, which may be all secret.
func ParseKey(entry string) (Key, error) {
	i := strings.LastIndexByte(entry, ':')
	if i < 0 {
		if entry == "" {
			return Key{}, errors.New("empty key")
		}
		return Key{Secret: entry, Role: Admin}, nil
	}
	role, err := ParseRole(entry[i+1:])
	if err != nil {
		return Key{}, errors.New("the text after the last ':' is not a role; end the entry in :read, :write or :admin")
	}
	if i == 0 {
		return Key{}, errors.New("empty key before the role")
	}
	return Key{Secret: entry[:i], Role: role}, nil
}

// Keyring answers which role a presented key has. Keys are held as SHA-256
// digests and compared with ConstantTimeCompare against every key without
// early exit, so neither timing nor length tells how close a guess was or
// which key matched.
type Keyring struct {
	sums  [][sha256.Size]byte
	roles []Role
}

// NewKeyring holds keys; an empty secret or a key without a role is an
// error naming its position.
func NewKeyring(keys []Key) (*Keyring, error) {
	kr := &Keyring{}
	for i, k := range keys {
		if k.Secret == "" {
			return nil, fmt.Errorf("key %d is empty", i+1)
		}
		if k.Role < Read || k.Role > Admin {
			return nil, fmt.Errorf("key %d has no role", i+1)
		}
		kr.sums = append(kr.sums, sha256.Sum256([]byte(k.Secret)))
		kr.roles = append(kr.roles, k.Role)
	}
	return kr, nil
}

// Len is how many keys the ring holds; zero means authentication is off.
func (kr *Keyring) Len() int { return len(kr.sums) }

// Lookup returns the role of token, or None and false when no key matches.
// Should the same secret be listed twice, the highest role wins.
func (kr *Keyring) Lookup(token string) (Role, bool) {
	sum := sha256.Sum256([]byte(token))
	role := None
	for i := range kr.sums {
		eq := subtle.ConstantTimeCompare(sum[:], kr.sums[i][:])
		// Branch-free select, so the loop takes the same time whichever key matched.
		higher := subtle.ConstantTimeLessOrEq(int(role)+1, int(kr.roles[i]))
		role = Role(subtle.ConstantTimeSelect(eq&higher, int(kr.roles[i]), int(role)))
	}
	return role, role != None
}

type ctxKey struct{}

// WithRole returns ctx carrying the role of the request's key.
func WithRole(ctx context.Context, r Role) context.Context {
	return context.WithValue(ctx, ctxKey{}, r)
}

// RoleFrom returns the role WithRole stored, or None.
func RoleFrom(ctx context.Context) Role {
	r, _ := ctx.Value(ctxKey{}).(Role)
	return r
}
