package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/api"
	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/testbody"
	"github.com/spoolhq/spool/internal/testpg"
)

// peakRSSLimitKB is issue 14's hard bound: with 16 concurrent
// maximum-size batches the serve process's peak resident memory stays
// under 200 MB (190.7 MiB).
const peakRSSLimitKB = 200_000_000 / 1024

// maxBatchBody is a batch enqueue of DefaultMaxBatch tasks that fills the
// default batch body limit (MaxBodyBytes × BatchBodyFactor).
func maxBatchBody(t *testing.T, b64 bool) []byte {
	t.Helper()
	const limit = api.DefaultMaxBodyBytes * api.BatchBodyFactor
	b := testbody.Batch(api.DefaultMaxBatch, limit, "http://127.0.0.1:9/m", b64)
	if len(b) > limit || len(b) < limit-8<<10 {
		t.Fatalf("batch body is %d bytes; want just under %d", len(b), limit)
	}
	return b
}

// procStatusKB reads a field (VmHWM, VmRSS) of /proc/<pid>/status in kB.
func procStatusKB(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("read /proc/%d/status: %v", pid, err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("%s %q: %v", field, v, err)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// burstResult is what a burst of batches did.
type burstResult struct {
	ids                []string // every id acknowledged with 201
	created, refused   int      // answers: 201, 503
	baseKB, peakKB     int64    // VmRSS before, VmHWM after
	elapsed            time.Duration
	refusalsWellFormed bool
}

// sendBurst sends n maximum-size batches at once to api, each sender
// retrying after a 503 as its Retry-After says until its batch is
// accepted or the deadline passes.
func sendBurst(t *testing.T, in *instance, queue string, n int, deadline time.Duration) burstResult {
	t.Helper()
	bodies := [2][]byte{maxBatchBody(t, false), maxBatchBody(t, true)}
	res := burstResult{baseKB: procStatusKB(t, in.cmd.Process.Pid, "VmRSS"), refusalsWellFormed: true}
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	client := &http.Client{Timeout: 60 * time.Second}
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Since(start) < deadline {
				req, _ := http.NewRequest("POST", "http://"+in.api+"/v1/queues/"+queue+"/tasks", bytes.NewReader(bodies[i%2]))
				req.Header.Set("Authorization", "Bearer "+testAPIKey)
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				if err != nil {
					t.Errorf("batch %d: %v", i, err)
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch resp.StatusCode {
				case http.StatusCreated:
					var out struct{ Tasks []apiTask }
					if err := json.Unmarshal(b, &out); err != nil {
						t.Errorf("batch %d: decode the 201: %v", i, err)
						return
					}
					mu.Lock()
					res.created++
					for _, tk := range out.Tasks {
						res.ids = append(res.ids, tk.ID)
					}
					mu.Unlock()
					return
				case http.StatusServiceUnavailable:
					mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
					wait, err := strconv.Atoi(resp.Header.Get("Retry-After"))
					mu.Lock()
					res.refused++
					if mt != "application/problem+json" || err != nil || wait < 1 {
						res.refusalsWellFormed = false
						wait = 1
					}
					mu.Unlock()
					time.Sleep(time.Duration(wait) * time.Second)
				default:
					t.Errorf("batch %d: %d %.300s", i, resp.StatusCode, b)
					return
				}
			}
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	res.peakKB = procStatusKB(t, in.cmd.Process.Pid, "VmHWM")
	return res
}

// storedIDs returns the ids of every task in queue, read from the store.
func storedIDs(t *testing.T, st store.Store, queue string) map[string]bool {
	t.Helper()
	got := map[string]bool{}
	p := store.ListParams{Queue: queue, Limit: 1000}
	for {
		tsPage, err := st.ListTasks(context.Background(), p)
		ts := tsPage.Tasks
		if err != nil {
			t.Fatal(err)
		}
		for _, tk := range ts {
			got[tk.ID] = true
		}
		if len(ts) < p.Limit {
			return got
		}
		p.After = ts[len(ts)-1].ID
	}
}

// TestMaxBatchBurstMemory is issue 14 item 3's hard figure, against the
// real binary: 16 senders post a maximum-size batch (1,000 tasks, just
// under 10 MiB) at once, each retrying after a 503 as Retry-After says.
// The serve process's peak resident memory (VmHWM) stays under 200 MB,
// every batch is accepted in the end, and every task acknowledged with a
// 201 is in the store.
func TestMaxBatchBurstMemory(t *testing.T) {
	for _, driver := range []string{"sqlite", "postgres"} {
		t.Run(driver, func(t *testing.T) {
			o := serveOpts{dataDir: t.TempDir(), env: []string{"SPOOL_MIGRATE=true"}}
			if driver == "postgres" {
				o.dsn = testpg.Shared(t).CreateDB(t)
			}
			in := startServe(t, "serve", o, newKey(t))
			const senders = 16
			r := sendBurst(t, in, "burst", senders, 60*time.Second)
			t.Logf("%s: %d concurrent max batches: RSS %.1f MiB before, peak (VmHWM) %.1f MiB; %d answered 201, %d answered 503, all done in %s",
				driver, senders, float64(r.baseKB)/1024, float64(r.peakKB)/1024, r.created, r.refused, r.elapsed.Round(time.Millisecond))
			if r.peakKB >= peakRSSLimitKB {
				t.Errorf("peak RSS %.1f MiB; want under 200 MB (%.1f MiB)", float64(r.peakKB)/1024, float64(peakRSSLimitKB)/1024)
			}
			if r.created != senders {
				t.Errorf("%d of %d batches accepted within the deadline", r.created, senders)
			}
			if !r.refusalsWellFormed {
				t.Errorf("a 503 was not a problem+json with a Retry-After of at least 1 second")
			}
			stored := storedIDs(t, openTestStore(t, o), "burst")
			lost := 0
			for _, id := range r.ids {
				if !stored[id] {
					lost++
				}
			}
			if lost > 0 || len(stored) != len(r.ids) {
				t.Errorf("%d of %d acknowledged tasks are not in the store, which holds %d", lost, len(r.ids), len(stored))
			}
		})
	}
}
