package client_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/spoolhq/spool/client"
	"github.com/spoolhq/spool/client/clienttest"
)

func TestAllTasks(t *testing.T) {
	t.Parallel()
	srv := clienttest.New(t, key)
	c := newClient(t, srv, fast)
	ctx := ctxFor(t)
	var want []string
	for range 5 {
		task, _, err := c.Enqueue(ctx, "q", client.EnqueueRequest{Target: target})
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, task.ID)
	}
	if _, _, err := c.Enqueue(ctx, "other", client.EnqueueRequest{Target: target}); err != nil {
		t.Fatal(err)
	}

	before := srv.Requests()
	var got []string
	for task, err := range c.AllTasks(ctx, "q", client.ListOptions{Limit: 2}) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, task.ID)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("iterated %v, want %v", got, want)
	}
	if n := srv.Requests() - before; n != 3 {
		t.Fatalf("5 tasks by 2 took %d pages, want 3", n)
	}

	// Breaking out fetches no further page.
	before = srv.Requests()
	for range c.AllTasks(ctx, "q", client.ListOptions{Limit: 2}) {
		break
	}
	if n := srv.Requests() - before; n != 1 {
		t.Fatalf("break after the first task fetched %d pages", n)
	}

	// A filter and a starting cursor are kept on every page.
	srv.SetState(want[1], client.StateFailed)
	srv.SetState(want[4], client.StateFailed)
	got = nil
	for task, err := range c.AllTasks(ctx, "q", client.ListOptions{State: client.StateFailed, Limit: 1, Cursor: want[0]}) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, task.ID)
	}
	if fmt.Sprint(got) != fmt.Sprint([]string{want[1], want[4]}) {
		t.Fatalf("failed tasks %v", got)
	}

	// An error is yielded once, and ends the iteration.
	n := 0
	for task, err := range c.AllTasks(ctx, "q", client.ListOptions{State: "bogus"}) {
		n++
		if client.StatusOf(err) != 422 || task.ID != "" {
			t.Fatalf("yielded %+v, %v", task, err)
		}
	}
	if n != 1 {
		t.Fatalf("an error yielded %d times", n)
	}
}

func TestAllTasksStuckCursor(t *testing.T) {
	t.Parallel()
	pages := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pages++
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"tasks":[{"id":"a"}],"next_cursor":"same"}`))
	}))
	defer srv.Close()
	c, _ := client.New(srv.URL, "")
	var last error
	n := 0
	for _, err := range c.AllTasks(ctxFor(t), "q", client.ListOptions{}) {
		n++
		last = err
		if n > 10 {
			break
		}
	}
	if last == nil || pages != 2 || n != 3 {
		t.Fatalf("a server repeating its cursor: %d items, %d pages, last error %v", n, pages, last)
	}
}
