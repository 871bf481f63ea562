// Package testbody builds enqueue request bodies of a chosen size for
// tests and benchmarks that measure memory: the API's benchmarks, the
// end-to-end burst test and the soak. It imports nothing of Spool's.
package testbody

import (
	"bytes"
	"encoding/base64"
	"strings"
)

// Batch returns a batch enqueue body of n tasks that fills limit bytes to
// within a few hundred: each task targets target, is delayed an hour (so
// that nothing is delivered while memory is measured) and carries an equal
// share of the bytes as a JSON string payload or, with b64, as
// payload_base64, whose decoding makes more garbage.
func Batch(n, limit int, target string, b64 bool) []byte {
	item := func(fill int) string {
		head := `{"target":{"url":"` + target + `"},"delay":"1h",`
		if b64 {
			return head + `"payload_base64":"` + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xA5}, fill/4*3)) + `"}`
		}
		return head + `"payload":{"s":"` + strings.Repeat("x", fill) + `"}}`
	}
	fill := max(0, (limit-len(`{"tasks":[]}`))/n-len(item(0))-1-4) // 1 for the comma, 4 for base64 rounding
	var b bytes.Buffer
	b.Grow(limit)
	b.WriteString(`{"tasks":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(item(fill))
	}
	b.WriteString(`]}`)
	return b.Bytes()
}
