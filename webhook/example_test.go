package webhook_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	"github.com/spoolhq/spool/webhook"
)

// The same key as the receiver's SPOOL_SIGNING_KEYS entry; generate yours
// with webhook.GenerateKey or `openssl rand -base64 32` (prefix whsec_).
const exampleKey = "whsec_c3Bvb2wtdGVzdC1rZXktMDEyMzQ1Njc4OWFiY2RlZg=="

// send posts body to url signed as Spool's dispatcher signs a delivery.
func send(url string, keys [][]byte, id string, attempt int, body string) (int, string) {
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(webhook.HeaderAttempt, fmt.Sprint(attempt))
	webhook.SetHeaders(req.Header, keys, id, time.Now(), []byte(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// A receiver of Spool's deliveries: the middleware verifies the signature,
// gives the handler the body back, and the webhook-id and attempt in the
// request's context.
func Example_middleware() {
	keys, err := webhook.ParseKeys([]string{exampleKey})
	if err != nil {
		panic(err)
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := webhook.IDFromContext(r.Context())
		attempt, _ := webhook.AttemptFromContext(r.Context())
		body, _ := io.ReadAll(r.Body)
		fmt.Printf("handled %s (attempt %d): %s\n", id, attempt, body)
		w.WriteHeader(http.StatusNoContent)
	})
	mux := http.NewServeMux()
	mux.Handle("POST /hooks/spool", webhook.Middleware(keys)(handler))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	status, _ := send(srv.URL+"/hooks/spool", keys, "0193a3c4-0000-7000-8000-000000000001", 1, `{"order":42}`)
	fmt.Println("signed:", status)

	forged, _ := webhook.GenerateKey()
	other, _ := webhook.ParseKeys([]string{forged})
	status, reason := send(srv.URL+"/hooks/spool", other, "0193a3c4-0000-7000-8000-000000000002", 1, `{"order":43}`)
	fmt.Println("forged:", status, reason)
	// Output:
	// handled 0193a3c4-0000-7000-8000-000000000001 (attempt 1): {"order":42}
	// signed: 204
	// forged: 401 webhook: no matching signature
}

// Deduplicating on webhook-id: Spool delivers at least once, so a receiver
// may see a message again (its answer was lost, a worker crashed). With
// WithSeen, the middleware answers a duplicate 200 without calling the
// handler, which stops Spool's redeliveries.
func Example_duplicates() {
	keys, _ := webhook.ParseKeys([]string{exampleKey})
	var mu sync.Mutex
	done := map[string]bool{} // in a real receiver: a table written with the handler's work
	seen := func(ctx context.Context, id string) (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		return done[id], nil
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := webhook.IDFromContext(r.Context())
		attempt, _ := webhook.AttemptFromContext(r.Context())
		fmt.Printf("handler runs for attempt %d\n", attempt)
		mu.Lock()
		done[id] = true // only once the work is done
		mu.Unlock()
	})
	srv := httptest.NewServer(webhook.Middleware(keys, webhook.WithSeen(seen))(handler))
	defer srv.Close()

	for attempt := 1; attempt <= 2; attempt++ {
		status, text := send(srv.URL, keys, "0193a3c4-0000-7000-8000-000000000003", attempt, `{}`)
		fmt.Println(strings.TrimSpace(fmt.Sprint(status, " ", text)))
	}
	// Output:
	// handler runs for attempt 1
	// 200
	// 200 duplicate: already handled
}

// Verify checks headers and a body read by any framework. During a key
// rotation Spool signs with the old and the new key; a receiver holding
// either one accepts.
func Example_verify() {
	oldKey, _ := webhook.ParseKey(exampleKey)
	newKey, _ := webhook.ParseKey("whsec_bmV3LXNwb29sLWtleS1mb3ItdGhlLXJvdGF0aW9uLTAxMjM0")
	body := []byte(`{"order":42}`)
	sent := time.Unix(1_800_000_000, 0)
	h := webhook.Headers([][]byte{oldKey, newKey}, "msg-1", sent, body)
	fmt.Println("signatures:", len(strings.Fields(h.Get(webhook.HeaderSignature))))

	received := sent.Add(2 * time.Second)
	fmt.Println("old key:", webhook.Verify([][]byte{oldKey}, h, body, received, 0))
	fmt.Println("new key:", webhook.Verify([][]byte{newKey}, h, body, received, 0))
	fmt.Println("tampered:", webhook.Verify([][]byte{newKey}, h, []byte(`{"order":43}`), received, 0))
	fmt.Println("an hour late:", webhook.Verify([][]byte{newKey}, h, body, sent.Add(time.Hour), 0))
	// Output:
	// signatures: 2
	// old key: <nil>
	// new key: <nil>
	// tampered: webhook: no matching signature
	// an hour late: webhook: timestamp invalid or outside tolerance: timestamp 1800000000 is more than 5m0s in the past
}
