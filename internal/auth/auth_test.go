package auth

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

func TestParseKey(t *testing.T) {
	t.Parallel()
	for entry, want := range map[string]Key{
		"k1":             {"k1", Admin},
		"k1:read":        {"k1", Read},
		"k1:write":       {"k1", Write},
		"k1:admin":       {"k1", Admin},
		"a:b:read":       {"a:b", Read}, // the last colon names the role
		"0123456789abcd": {"0123456789abcd", Admin},
	} {
		got, err := ParseKey(entry)
		if err != nil || got != want {
			t.Errorf("ParseKey(%q) = %v %v, want %v", entry, got, err, want)
		}
	}
	for _, entry := range []string{"s3cret:reader", "s3cret:", "s3cret:Admin", ":read", "", "s3cret:pw"} {
		_, err := ParseKey(entry)
		if err == nil {
			t.Errorf("ParseKey(%q): no error", entry)
			continue
		}
		if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "pw") || strings.Contains(err.Error(), "reader") {
			t.Errorf("ParseKey(%q): error shows the entry: %v", entry, err)
		}
	}
}

func TestRoleOrder(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		have, need Role
		ok         bool
	}{
		{Read, Read, true}, {Read, Write, false}, {Read, Admin, false},
		{Write, Read, true}, {Write, Write, true}, {Write, Admin, false},
		{Admin, Read, true}, {Admin, Write, true}, {Admin, Admin, true},
		{None, None, false}, {None, Read, false},
	} {
		if got := c.have.Allows(c.need); got != c.ok {
			t.Errorf("%s.Allows(%s) = %v", c.have, c.need, got)
		}
	}
	if r, err := ParseRole("write"); err != nil || r != Write || r.String() != "write" {
		t.Errorf("ParseRole(write) = %v %v", r, err)
	}
}

func TestKeyring(t *testing.T) {
	t.Parallel()
	kr, err := NewKeyring([]Key{{"r", Read}, {"w", Write}, {"a", Admin}, {"twice", Read}, {"twice", Write}})
	if err != nil {
		t.Fatal(err)
	}
	for token, want := range map[string]Role{"r": Read, "w": Write, "a": Admin, "twice": Write, "x": None, "": None, "rr": None} {
		got, ok := kr.Lookup(token)
		if got != want || ok != (want != None) {
			t.Errorf("Lookup(%q) = %v %v, want %v", token, got, ok, want)
		}
	}
	if kr.Len() != 5 {
		t.Errorf("Len = %d", kr.Len())
	}
	for _, bad := range [][]Key{{{"", Read}}, {{"k", None}}} {
		if _, err := NewKeyring(bad); err == nil {
			t.Errorf("NewKeyring(%v): no error", bad)
		}
	}
}

func TestKeyNeverPrints(t *testing.T) {
	t.Parallel()
	k := Key{Secret: "hunter2", Role: Write}
	if s := fmt.Sprintf("%v %+v %s %#v", k, k, k, k); strings.Contains(s, "hunter2") {
		t.Errorf("key printed: %s", s)
	}
}

func TestRoleContext(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	if RoleFrom(ctx) != None {
		t.Error("empty context has a role")
	}
	if RoleFrom(WithRole(ctx, Write)) != Write {
		t.Error("role not carried")
	}
}
