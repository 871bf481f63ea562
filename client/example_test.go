package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/spoolhq/spool/client"
	"github.com/spoolhq/spool/client/clienttest"
)

// Enqueue a task: Spool will POST the payload to the target, retrying
// with backoff until it answers 2xx. The examples run against
// clienttest's in-memory stand-in; in production the URL is your Spool
// server's and the key one of its SPOOL_API_KEYS.
func Example_enqueue() {
	srv := clienttest.Start("example-key")
	defer srv.Close()

	c, err := client.New(srv.URL, "example-key")
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	task, created, err := c.Enqueue(ctx, "emails", client.EnqueueRequest{
		Target:      client.Target{URL: "https://app.example.com/hooks/send-email"},
		Payload:     json.RawMessage(`{"to":"ada@example.com","template":"welcome"}`),
		Delay:       10 * time.Minute,
		MaxAttempts: 5,
		// No IdempotencyKey: the client generates one, so its retries after
		// a lost answer cannot enqueue the email twice. Set your own (an
		// order id, say) to make your application's retries safe too.
	})
	if err != nil {
		panic(err)
	}
	fmt.Println(task.ID, task.Queue, task.State, created)
	fmt.Println("key generated:", task.IdempotencyKey != "")
	// Output:
	// 0190a000-0000-7000-8000-000000000001 emails scheduled true
	// key generated: true
}

// Several tasks at once, atomically: all are stored or none.
func Example_batch() {
	srv := clienttest.Start("")
	defer srv.Close()
	c, _ := client.New(srv.URL, "")

	tasks, err := c.EnqueueBatch(context.Background(), "reports", []client.EnqueueRequest{
		{Target: client.Target{URL: "https://app.example.com/reports/daily"}, IdempotencyKey: "daily-2030-01-02"},
		{Target: client.Target{URL: "https://app.example.com/reports/weekly"}, Priority: client.Ptr(0)},
	})
	if err != nil {
		panic(err)
	}
	for _, t := range tasks {
		fmt.Println(t.ID, t.Target.URL, "priority", t.Priority)
	}
	// Output:
	// 0190a000-0000-7000-8000-000000000001 https://app.example.com/reports/daily priority 5
	// 0190a000-0000-7000-8000-000000000002 https://app.example.com/reports/weekly priority 0
}

// Every task of a queue, page by page, with a range-over-func loop: the
// next page is fetched only when the loop gets there.
func Example_listIterator() {
	srv := clienttest.Start("")
	defer srv.Close()
	c, _ := client.New(srv.URL, "")
	ctx := context.Background()
	for i := range 5 {
		_, _, _ = c.Enqueue(ctx, "emails", client.EnqueueRequest{
			Target: client.Target{URL: fmt.Sprintf("https://app.example.com/hooks/%d", i)},
		})
	}

	for t, err := range c.AllTasks(ctx, "emails", client.ListOptions{Limit: 2}) {
		if err != nil {
			fmt.Println("error:", err)
			break
		}
		fmt.Println(t.ID, t.State, t.Target.URL)
	}
	// Output:
	// 0190a000-0000-7000-8000-000000000001 available https://app.example.com/hooks/0
	// 0190a000-0000-7000-8000-000000000002 available https://app.example.com/hooks/1
	// 0190a000-0000-7000-8000-000000000003 available https://app.example.com/hooks/2
	// 0190a000-0000-7000-8000-000000000004 available https://app.example.com/hooks/3
	// 0190a000-0000-7000-8000-000000000005 available https://app.example.com/hooks/4
}

// An answer other than 2xx is a *client.Error with the problem+json
// fields; each invalid field of a 422 is named.
func Example_errors() {
	srv := clienttest.Start("")
	defer srv.Close()
	c, _ := client.New(srv.URL, "")

	_, _, err := c.Enqueue(context.Background(), "emails", client.EnqueueRequest{
		Target:   client.Target{URL: "https://app.example.com/hooks/x"},
		Priority: client.Ptr(12),
	})
	var apiErr *client.Error
	if errors.As(err, &apiErr) {
		fmt.Println(apiErr.Status, apiErr.Title)
		for _, f := range apiErr.Fields {
			fmt.Printf("%s: %s\n", f.Field, f.Detail)
		}
	}
	// Output:
	// 422 Unprocessable Entity
	// priority: must be 0-9
}

// Cancel a task, and run a failed one again.
func Example_cancelAndRetry() {
	srv := clienttest.Start("")
	defer srv.Close()
	c, _ := client.New(srv.URL, "")
	ctx := context.Background()

	a, _, _ := c.Enqueue(ctx, "emails", client.EnqueueRequest{Target: client.Target{URL: "https://app.example.com/a"}})
	cancelled, err := c.CancelTask(ctx, a.ID)
	if err != nil {
		panic(err)
	}
	fmt.Println(cancelled.ID, cancelled.State)

	b, _, _ := c.Enqueue(ctx, "emails", client.EnqueueRequest{Target: client.Target{URL: "https://app.example.com/b"}})
	srv.SetState(b.ID, client.StateFailed) // as if its attempts were spent
	again, err := c.RetryTask(ctx, b.ID)
	if err != nil {
		panic(err)
	}
	fmt.Println(again.ID, again.State)
	// Output:
	// 0190a000-0000-7000-8000-000000000001 cancelled
	// 0190a000-0000-7000-8000-000000000002 available
}

// Queues: settings and counts, and pausing one.
func Example_queues() {
	srv := clienttest.Start("")
	defer srv.Close()
	c, _ := client.New(srv.URL, "")
	ctx := context.Background()
	_, _, _ = c.Enqueue(ctx, "emails", client.EnqueueRequest{Target: client.Target{URL: "https://app.example.com/a"}})

	q, err := c.UpdateQueue(ctx, "emails", client.QueuePatch{Concurrency: client.Ptr(10), RateLimit: client.Ptr(50.0)})
	if err != nil {
		panic(err)
	}
	fmt.Println(q.Name, "concurrency", q.Concurrency, "rate", q.RateLimit, "available", q.Counts[client.StateAvailable])
	q, _ = c.PauseQueue(ctx, "emails")
	fmt.Println("paused:", q.Paused)
	// Output:
	// emails concurrency 10 rate 50 available 1
	// paused: true
}

// Retries: requests safe to repeat are retried on 429, 503 and connection
// errors, waiting at least the server's Retry-After; the policy is an
// option of the client.
func Example_retries() {
	srv := clienttest.Start("")
	defer srv.Close()
	c, _ := client.New(srv.URL, "", client.WithRetryPolicy(client.RetryPolicy{
		MaxAttempts: 5,
		MinBackoff:  10 * time.Millisecond,
		MaxBackoff:  time.Second,
	}))

	srv.FailNext(2, 503, "") // the server is busy twice, then answers
	queues, err := c.ListQueues(context.Background())
	fmt.Println(len(queues), err, "after", srv.Requests(), "requests")
	// Output:
	// 0 <nil> after 3 requests
}
