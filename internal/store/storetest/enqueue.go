package storetest

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

func testEnqueue(t *testing.T, newStore NewStoreFunc) {
	t.Run("Defaults", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		nt := newTask("default")
		before := time.Now()
		res := mustEnqueue(t, ctx, s, nt)[0]
		after := time.Now()
		if res.Existing {
			t.Error("Existing = true for a new task")
		}
		tk := res.Task
		if tk.ID != nt.ID || tk.Queue != "default" {
			t.Errorf("ID, Queue = %s, %s; want %s, default", tk.ID, tk.Queue, nt.ID)
		}
		if tk.State != task.Available {
			t.Errorf("State = %s, want available", tk.State)
		}
		if tk.Attempt != 0 {
			t.Errorf("Attempt = %d, want 0", tk.Attempt)
		}
		if tk.MaxAttempts != task.DefaultMaxAttempts {
			t.Errorf("MaxAttempts = %d, want the queue default %d", tk.MaxAttempts, task.DefaultMaxAttempts)
		}
		if tk.Timeout != task.DefaultTimeout {
			t.Errorf("Timeout = %v, want the queue default %v", tk.Timeout, task.DefaultTimeout)
		}
		if tk.Priority != task.DefaultPriority {
			t.Errorf("Priority = %d, want %d", tk.Priority, task.DefaultPriority)
		}
		checkBetween(t, "RunAt (zero given)", tk.RunAt, before, after)
		checkBetween(t, "CreatedAt", tk.CreatedAt, before, after)
		checkBetween(t, "UpdatedAt", tk.UpdatedAt, before, after)
		if tk.FinishedAt != nil {
			t.Errorf("FinishedAt = %v, want nil", *tk.FinishedAt)
		}
		if tk.LastError != "" || tk.LastStatus != 0 || tk.IdempotencyKey != "" {
			t.Errorf("LastError, LastStatus, IdempotencyKey = %q, %d, %q; want empty", tk.LastError, tk.LastStatus, tk.IdempotencyKey)
		}
		checkSameTask(t, "GetTask after Enqueue", mustGet(t, ctx, s, nt.ID), tk)
	})

	// Megabytes of payloads in one call (a driver may split its insert by
	// size, as PostgreSQL does): every task is stored whole, in input
	// order, a repeated key still resolves to a task stored earlier in the
	// call or before it, and the results carry the payloads as given.
	t.Run("LargePayloads", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		old := newTask("big")
		old.IdempotencyKey = "stored-before"
		mustEnqueue(t, ctx, s, old)
		nts := newTasks("big", 40)
		for i := range nts {
			nts[i].Payload = bytes.Repeat([]byte{byte('a' + i%26)}, 100<<10+i) // 4 MiB in all
		}
		nts[3].IdempotencyKey = "stored-before"
		nts[10].IdempotencyKey, nts[35].IdempotencyKey = "in-call", "in-call"
		res := mustEnqueue(t, ctx, s, nts...)
		for i, r := range res {
			want := nts[i].ID
			switch i {
			case 3:
				want = old.ID
			case 35:
				want = nts[10].ID
			}
			if r.Task.ID != want || r.Existing != (i == 3 || i == 35) {
				t.Fatalf("result %d: %s (existing %v), want %s", i, r.Task.ID, r.Existing, want)
			}
			if r.Existing {
				continue
			}
			if !bytes.Equal(r.Task.Payload, nts[i].Payload) {
				t.Errorf("result %d: payload %s, want %s", i, summarize(r.Task.Payload), summarize(nts[i].Payload))
			}
			if got := mustGet(t, ctx, s, want); !bytes.Equal(got.Payload, nts[i].Payload) {
				t.Errorf("task %d as stored: payload %s, want %s", i, summarize(got.Payload), summarize(nts[i].Payload))
			}
		}
	})

	t.Run("ExplicitSettings", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		nt := newTask("default")
		nt.MaxAttempts = 3
		nt.Timeout = 2500 * time.Millisecond
		nt.Priority = task.MinPriority // 0 is a real priority, not "default"
		nt.RunAt = time.Now().Add(-time.Minute).Truncate(time.Microsecond)
		nt.IdempotencyKey = "key-1"
		tk := enqueueOne(t, ctx, s, nt)
		for _, got := range []task.Task{tk, mustGet(t, ctx, s, nt.ID)} {
			if got.MaxAttempts != 3 || got.Timeout != nt.Timeout || got.Priority != 0 {
				t.Errorf("MaxAttempts, Timeout, Priority = %d, %v, %d; want 3, %v, 0", got.MaxAttempts, got.Timeout, got.Priority, nt.Timeout)
			}
			if got.State != task.Available {
				t.Errorf("State = %s, want available (RunAt in the past)", got.State)
			}
			checkNear(t, "RunAt (given, in the past)", got.RunAt, nt.RunAt)
			if got.IdempotencyKey != "key-1" {
				t.Errorf("IdempotencyKey = %q, want key-1", got.IdempotencyKey)
			}
		}
	})

	t.Run("QueueSettingsAreDefaults", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		maxAttempts, timeout := 7, 12*time.Second
		mustUpdateQueue(t, ctx, s, "custom", task.QueuePatch{MaxAttempts: &maxAttempts, Timeout: &timeout})
		implicit := newTask("custom")
		explicit := newTask("custom")
		explicit.MaxAttempts, explicit.Timeout = 4, 3*time.Second
		res := mustEnqueue(t, ctx, s, implicit, explicit)
		if got := res[0].Task; got.MaxAttempts != 7 || got.Timeout != timeout {
			t.Errorf("implicit: MaxAttempts, Timeout = %d, %v; want the queue's 7, %v", got.MaxAttempts, got.Timeout, timeout)
		}
		if got := res[1].Task; got.MaxAttempts != 4 || got.Timeout != 3*time.Second {
			t.Errorf("explicit: MaxAttempts, Timeout = %d, %v; want 4, 3s", got.MaxAttempts, got.Timeout)
		}
	})

	t.Run("ScheduledOrAvailable", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		future := newTask("q")
		future.RunAt = time.Now().Add(time.Hour).Truncate(time.Microsecond)
		past := newTask("q")
		past.RunAt = time.Now().Add(-time.Second).Truncate(time.Microsecond)
		now := newTask("q")
		res := mustEnqueue(t, ctx, s, future, past, now)
		want := []task.State{task.Scheduled, task.Available, task.Available}
		for i, r := range res {
			if r.Task.State != want[i] {
				t.Errorf("result %d: State = %s, want %s", i, r.Task.State, want[i])
			}
			checkState(t, ctx, s, r.Task.ID, want[i])
		}
		checkNear(t, "future RunAt", res[0].Task.RunAt, future.RunAt)
		checkNear(t, "stored future RunAt", mustGet(t, ctx, s, future.ID).RunAt, future.RunAt)
	})

	t.Run("ResultsInInputOrder", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		var nts []store.NewTask
		for i := range 20 {
			nt := newTask([]string{"a", "b"}[i%2])
			if i%3 == 0 {
				nt.RunAt = time.Now().Add(time.Hour)
			}
			nts = append(nts, nt)
		}
		nts = shuffled(nts)
		res := mustEnqueue(t, ctx, s, nts...)
		for i, r := range res {
			if r.Task.ID != nts[i].ID || r.Task.Queue != nts[i].Queue {
				t.Errorf("result %d is %s in %s, want %s in %s", i, r.Task.ID, r.Task.Queue, nts[i].ID, nts[i].Queue)
			}
		}
	})

	t.Run("RoundTrip", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		binary := make([]byte, 256)
		for i := range binary {
			binary[i] = byte(i) // NUL, invalid UTF-8, every byte value
		}
		large := make([]byte, 256<<10)
		for i := range large {
			large[i] = byte(rand.IntN(256))
		}
		cases := []struct {
			name        string
			payload     []byte
			contentType string
			target      task.Target
		}{
			{"json", []byte(`{"a":[1,2,{"b":"ü"}],"c":null}` + "\n"), "application/json", task.Target{URL: "http://127.0.0.1:9/a?x=1&y=%20", Method: "POST", Headers: map[string]string{"X-A": "1", "X-Unicode": "héllo ✓", "Authorization": "Bearer t"}}},
			{"binary", binary, "application/octet-stream", task.Target{URL: "http://127.0.0.1:9/b", Method: "PUT"}},
			{"nil", nil, "", task.Target{URL: "http://127.0.0.1:9/c", Method: "DELETE", Headers: map[string]string{}}},
			{"empty", []byte{}, "text/plain", task.Target{URL: "http://127.0.0.1:9/d", Method: "POST"}},
			{"large", large, "application/octet-stream", task.Target{URL: "http://127.0.0.1:9/e", Method: "PATCH"}},
			{"text with NUL and CR", []byte("a\x00b\r\nc\xff"), "text/plain; charset=utf-8", task.Target{URL: "http://127.0.0.1:9/f", Method: "POST"}},
		}
		var nts []store.NewTask
		for i, c := range cases {
			nt := newTask("q")
			nt.Payload, nt.ContentType, nt.Target = c.payload, c.contentType, c.target
			nt.Timeout = time.Duration(i+1) * 1500 * time.Millisecond
			nts = append(nts, nt)
		}
		res := mustEnqueue(t, ctx, s, nts...)
		want := make(map[string]task.Task)
		for i, c := range cases {
			exp := task.Task{ID: nts[i].ID, Target: c.target, Payload: c.payload, ContentType: c.contentType, Timeout: nts[i].Timeout}
			want[exp.ID] = exp
			for _, d := range diffDelivery(res[i].Task, exp) {
				t.Errorf("%s: Enqueue result: %s", c.name, d)
			}
			for _, d := range diffDelivery(mustGet(t, ctx, s, exp.ID), exp) {
				t.Errorf("%s: GetTask: %s", c.name, d)
			}
		}
		// The worker delivers what Lease hands it, so it must be exact too.
		for _, l := range leaseN(t, ctx, s, len(cases), time.Minute) {
			for _, d := range diffDelivery(l.Task, want[l.Task.ID]) {
				t.Errorf("task %s: Lease: %s", l.Task.ID, d)
			}
		}
		listPage, err := s.ListTasks(ctx, store.ListParams{Queue: "q", Limit: 100})
		list := listPage.Tasks
		if err != nil {
			t.Fatalf("ListTasks: %v", err)
		}
		for _, tk := range list {
			if !bytes.Equal(tk.Payload, want[tk.ID].Payload) {
				t.Errorf("task %s: ListTasks payload = %s, want %s", tk.ID, summarize(tk.Payload), summarize(want[tk.ID].Payload))
			}
		}
	})

	t.Run("BatchAtomicDuplicateID", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		old := enqueueOne(t, ctx, s, newTask("q"))
		fresh := newTask("q")
		dup := newTask("other")
		dup.ID = old.ID
		dup.Payload = []byte("overwritten?")
		if _, err := s.Enqueue(ctx, []store.NewTask{fresh, dup}); err == nil {
			t.Fatal("Enqueue of a batch with an existing id succeeded")
		}
		_, err := s.GetTask(ctx, fresh.ID)
		checkIs(t, "GetTask of the failed batch's other task", err, store.ErrNotFound)
		checkSameTask(t, "task whose id was reused", mustGet(t, ctx, s, old.ID), old)
		// Nothing of the failed batch may linger in the listing either.
		listPage, err := s.ListTasks(ctx, store.ListParams{Queue: "q", Limit: 100})
		list := listPage.Tasks
		if err != nil {
			t.Fatalf("ListTasks: %v", err)
		}
		if len(list) != 1 {
			t.Errorf("queue q holds %d tasks, want 1", len(list))
		}
	})

	t.Run("BatchAtomicDuplicateIDInBatch", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		a, b := newTask("q"), newTask("q")
		c := newTask("q")
		c.ID = a.ID
		if _, err := s.Enqueue(ctx, []store.NewTask{a, b, c}); err == nil {
			t.Fatal("Enqueue of a batch repeating an id succeeded")
		}
		for _, id := range []string{a.ID, b.ID} {
			_, err := s.GetTask(ctx, id)
			checkIs(t, "GetTask after a failed batch", err, store.ErrNotFound)
		}
	})

	t.Run("IdempotencySameQueue", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		first := newTask("q")
		first.IdempotencyKey = "order-42"
		orig := enqueueOne(t, ctx, s, first)
		// The original moves on (leased) before the replay arrives.
		leaseOne(t, ctx, s, orig.ID, time.Minute)
		replay := newTask("q")
		replay.IdempotencyKey = "order-42"
		replay.Payload = []byte(`{"replay":true}`)
		res := mustEnqueue(t, ctx, s, replay)[0]
		if !res.Existing {
			t.Error("Existing = false for a repeated idempotency key")
		}
		if res.Task.ID != orig.ID {
			t.Fatalf("replay returned task %s, want the original %s", res.Task.ID, orig.ID)
		}
		if !bytes.Equal(res.Task.Payload, first.Payload) {
			t.Errorf("replay returned payload %s, want the original's", summarize(res.Task.Payload))
		}
		if res.Task.State != task.Running {
			t.Errorf("replay returned State %s, want the original's current state running", res.Task.State)
		}
		_, err := s.GetTask(ctx, replay.ID)
		checkIs(t, "GetTask of the replay's id", err, store.ErrNotFound)
		listPage, err := s.ListTasks(ctx, store.ListParams{Queue: "q", Limit: 100})
		list := listPage.Tasks
		if err != nil {
			t.Fatalf("ListTasks: %v", err)
		}
		if len(list) != 1 {
			t.Errorf("queue q holds %d tasks, want 1", len(list))
		}
	})

	t.Run("IdempotencyOtherQueue", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		a, b := newTask("q1"), newTask("q2")
		a.IdempotencyKey, b.IdempotencyKey = "k", "k"
		ra := mustEnqueue(t, ctx, s, a)[0]
		rb := mustEnqueue(t, ctx, s, b)[0]
		if ra.Existing || rb.Existing {
			t.Errorf("Existing = %v, %v; a key is scoped to its queue", ra.Existing, rb.Existing)
		}
		if rb.Task.ID != b.ID || rb.Task.Queue != "q2" {
			t.Errorf("second queue got task %s in %s, want %s in q2", rb.Task.ID, rb.Task.Queue, b.ID)
		}
		mustGet(t, ctx, s, b.ID)
	})

	t.Run("IdempotencyInOneBatch", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		a, b, c := newTask("q"), newTask("q"), newTask("q")
		a.IdempotencyKey, b.IdempotencyKey = "same", "same"
		res := mustEnqueue(t, ctx, s, a, b, c)
		if res[0].Existing || !res[1].Existing || res[2].Existing {
			t.Errorf("Existing = %v, %v, %v; want false, true, false", res[0].Existing, res[1].Existing, res[2].Existing)
		}
		if res[1].Task.ID != a.ID {
			t.Errorf("second of a shared key returned %s, want the first %s", res[1].Task.ID, a.ID)
		}
		if res[2].Task.ID != c.ID {
			t.Errorf("third result is %s, want %s", res[2].Task.ID, c.ID)
		}
		_, err := s.GetTask(ctx, b.ID)
		checkIs(t, "GetTask of the deduplicated task", err, store.ErrNotFound)
		q := mustQueue(t, ctx, s, "q")
		if q.Counts[task.Available] != 2 {
			t.Errorf("available count = %d, want 2", q.Counts[task.Available])
		}
	})

	t.Run("IdempotencyMixedBatch", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		orig := newTask("q")
		orig.IdempotencyKey = "k1"
		enqueueOne(t, ctx, s, orig)
		again := newTask("q")
		again.IdempotencyKey = "k1"
		other := newTask("q")
		other.IdempotencyKey = "k2"
		plain := newTask("q")
		res := mustEnqueue(t, ctx, s, plain, again, other)
		if res[0].Existing || !res[1].Existing || res[2].Existing {
			t.Errorf("Existing = %v, %v, %v; want false, true, false", res[0].Existing, res[1].Existing, res[2].Existing)
		}
		got := []string{res[0].Task.ID, res[1].Task.ID, res[2].Task.ID}
		if want := []string{plain.ID, orig.ID, other.ID}; !slices.Equal(got, want) {
			t.Errorf("result ids = %v, want %v", got, want)
		}
		mustGet(t, ctx, s, plain.ID)
		mustGet(t, ctx, s, other.ID)
	})

	t.Run("QueueCreatedWithDefaults", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		_, err := s.GetQueue(ctx, "fresh")
		checkIs(t, "GetQueue before any enqueue", err, store.ErrNotFound)
		before := time.Now()
		mustEnqueue(t, ctx, s, newTasks("fresh", 3)...)
		after := time.Now()
		q := mustQueue(t, ctx, s, "fresh")
		if q.Name != "fresh" || q.Concurrency != 0 || q.RateLimit != 0 || q.MaxAttempts != task.DefaultMaxAttempts ||
			q.Timeout != task.DefaultTimeout || q.Paused {
			t.Errorf("queue = %+v, want defaults (concurrency 0, rate 0, max attempts %d, timeout %v, not paused)", q, task.DefaultMaxAttempts, task.DefaultTimeout)
		}
		checkBetween(t, "queue CreatedAt", q.CreatedAt, before, after)
		checkCounts(t, "fresh", q.Counts, map[task.State]int64{task.Available: 3})
	})
}
