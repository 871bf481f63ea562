package task

import (
	"bytes"
	"testing"
	"time"
)

func TestFingerprint(t *testing.T) {
	at := time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)
	base := func() Request {
		return Request{
			Target:      Target{URL: "https://h.example/a", Method: "POST", Headers: map[string]string{"X-A": "1", "X-B": "2"}},
			Payload:     []byte(`{"n":1}`),
			ContentType: "application/json",
			Priority:    5,
		}
	}
	fp := base().Fingerprint()
	if len(fp) != 32 {
		t.Fatalf("fingerprint is %d bytes, want 32 (SHA-256)", len(fp))
	}

	// The same request, however built, has the same fingerprint.
	same := base()
	same.Target.Headers = map[string]string{"X-B": "2", "X-A": "1"}
	same.Payload = append([]byte(nil), base().Payload...)
	if !bytes.Equal(same.Fingerprint(), fp) {
		t.Error("an equal request has another fingerprint")
	}
	inZone := base()
	inZone.RunAt = at
	other := base()
	other.RunAt = at.In(time.FixedZone("X", 3600))
	if !bytes.Equal(inZone.Fingerprint(), other.Fingerprint()) {
		t.Error("one run_at in two zones has two fingerprints")
	}

	// Every field counts.
	changes := map[string]func(r *Request){
		"url":               func(r *Request) { r.Target.URL += "?x" },
		"method":            func(r *Request) { r.Target.Method = "PUT" },
		"header value":      func(r *Request) { r.Target.Headers["X-A"] = "2" },
		"header added":      func(r *Request) { r.Target.Headers["X-C"] = "" },
		"header removed":    func(r *Request) { delete(r.Target.Headers, "X-B") },
		"headers moved":     func(r *Request) { r.Target.Headers = map[string]string{"X-A": "1X-B", "": "2"} },
		"payload":           func(r *Request) { r.Payload = []byte(`{"n":2}`) },
		"payload empty":     func(r *Request) { r.Payload = []byte{} },
		"payload absent":    func(r *Request) { r.Payload = nil },
		"content type":      func(r *Request) { r.ContentType = "text/plain" },
		"priority":          func(r *Request) { r.Priority = 4 },
		"max attempts":      func(r *Request) { r.MaxAttempts = 3 },
		"timeout":           func(r *Request) { r.Timeout = time.Second },
		"delay":             func(r *Request) { r.Delay = time.Minute },
		"run_at":            func(r *Request) { r.RunAt = at },
		"run_at long past":  func(r *Request) { r.RunAt = time.Date(1000, 1, 1, 0, 0, 0, 0, time.UTC) },
		"run_at nanosecond": func(r *Request) { r.RunAt = at.Add(time.Nanosecond) },
	}
	seen := map[string]string{string(fp): "the base request"}
	for name, change := range changes {
		r := base()
		change(&r)
		got := string(r.Fingerprint())
		if prev, dup := seen[got]; dup {
			t.Errorf("%s: same fingerprint as %s", name, prev)
		}
		seen[got] = name
	}
}
