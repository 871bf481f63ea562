package task

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestExcerpt(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		max  int
		want string
	}{
		{"short", "hello", 10, "hello"},
		{"cut", "hello world", 5, "hello"},
		{"zero", "hello", 0, ""},
		{"rune cut at the limit is dropped", "ab€", 4, "ab"},
		{"incomplete rune at the end of a short body", "ab\xc3", 10, "ab\uFFFD"},
		{"newlines kept", "a\nb\tc", 10, "a\nb\tc"},
		{"invalid bytes", "a\xffb", 10, "a\uFFFDb"},
		{"NUL", "a\x00b", 10, "a\uFFFDb"},
		{"replacement never exceeds max", "\xff\xff\xff\xff", 4, "\uFFFD"},
	} {
		got := Excerpt([]byte(tc.in), tc.max)
		if got != tc.want {
			t.Errorf("%s: Excerpt(%q, %d) = %q, want %q", tc.name, tc.in, tc.max, got, tc.want)
		}
		if len(got) > tc.max || !utf8.ValidString(got) || strings.IndexByte(got, 0) >= 0 {
			t.Errorf("%s: Excerpt(%q, %d) = %q: longer than max, invalid UTF-8 or with NUL", tc.name, tc.in, tc.max, got)
		}
	}
}
