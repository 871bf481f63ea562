package store

import (
	"encoding/json"
	"fmt"

	"github.com/spoolhq/spool/internal/task"
)

// EncodeAttemptHeaders is how both drivers store an attempt's kept response
// headers: a JSON object, "" (stored NULL) when there are none.
func EncodeAttemptHeaders(h map[string]string) string {
	if len(h) == 0 {
		return ""
	}
	clean := make(map[string]string, len(h))
	for k, v := range h {
		clean[task.CleanText(k)] = task.CleanText(v)
	}
	b, err := json.Marshal(clean)
	if err != nil { // a map of strings always encodes
		panic(fmt.Sprintf("encode attempt headers: %v", err))
	}
	return string(b)
}

// DecodeAttemptHeaders reads what EncodeAttemptHeaders wrote (nil for "").
func DecodeAttemptHeaders(s string) (map[string]string, error) {
	if s == "" {
		return nil, nil
	}
	var h map[string]string
	if err := json.Unmarshal([]byte(s), &h); err != nil {
		return nil, fmt.Errorf("attempt headers: %w", err)
	}
	return h, nil
}
