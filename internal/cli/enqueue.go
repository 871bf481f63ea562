package cli

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spoolhq/spool/client"
	"github.com/spoolhq/spool/internal/task"
)

const enqueueUsage = `
Usage: spool enqueue [flags] QUEUE URL

Enqueues a task on QUEUE that delivers an HTTP request to URL, and prints
the task. The payload is JSON (--data) or arbitrary bytes (--data-base64).

Examples:
  spool enqueue emails https://example.com/hook --data '{"to":"a@example.com"}'
  spool enqueue emails https://example.com/hook --data @payload.json --delay 10m
  echo '{"n":1}' | spool enqueue reports http://127.0.0.1:8081/hook --data - --priority 0
  spool enqueue billing https://example.com/charge --data '{"id":7}' \
      -H 'X-Tenant: acme' --idempotency-key charge-7 --max-attempts 5 --timeout 10s
` + clientFlagsHelp

// headerList collects repeated -H 'Name: value' flags.
type headerList map[string]string

func (h headerList) String() string { return "" }

func (h headerList) Set(s string) error {
	name, value, ok := strings.Cut(s, ":")
	name = strings.TrimSpace(name)
	if !ok || name == "" || strings.ContainsAny(name, " \t") {
		return fmt.Errorf("want 'Name: value', got %q", s)
	}
	h[name] = strings.TrimSpace(value)
	return nil
}

// Enqueue implements `spool enqueue`.
func Enqueue(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) error {
	return enqueue(ctx, args, env, os.Stdin, stdout, stderr)
}

// enqueue is Enqueue with stdin injected, for tests of --data -.
func enqueue(ctx context.Context, args []string, env func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	env = getenv(env)
	cmd := newCommand("enqueue", enqueueUsage)
	fs := cmd.fs
	var cf clientFlags
	cf.register(fs)
	var tf taskFlags
	tf.register(fs)
	delay := fs.Duration("delay", 0, "deliver after this long, e.g. 30s, 10m (exclusive with --run-at)")
	runAt := fs.String("run-at", "", "deliver at this RFC 3339 time, e.g. 2030-01-02T15:04:05Z")
	idemKey := fs.String("idempotency-key", "", "a second enqueue with this key returns the first task (default: a generated key, so retries after a lost answer never enqueue twice)")

	pos, err := cmd.parse(args, stdout)
	if err != nil {
		return err
	}
	if err := cmd.wantArgs(pos, "QUEUE", "URL"); err != nil {
		return err
	}
	queue, target := pos[0], pos[1]
	given := cmd.set()
	if strings.TrimSpace(queue) == "" {
		return usagef("enqueue: QUEUE is empty")
	}
	req, err := tf.request("enqueue", target, given, stdin)
	if err != nil {
		return err
	}
	req.IdempotencyKey = *idemKey

	if given["delay"] && given["run-at"] {
		return usagef("enqueue: --delay and --run-at are exclusive")
	}
	if given["delay"] {
		if *delay < 0 || *delay > task.MaxScheduleAhead {
			return usagef("enqueue: --delay must be between 0 and %s, got %s", task.MaxScheduleAhead, *delay)
		}
		req.Delay = *delay
	}
	if given["run-at"] {
		t, err := time.Parse(time.RFC3339Nano, *runAt)
		if err != nil {
			return usagef("enqueue: --run-at must be an RFC 3339 time like 2030-01-02T15:04:05Z, got %q", *runAt)
		}
		req.RunAt = t
	}
	c, err := cf.client("enqueue", env)
	if err != nil {
		return err
	}
	t, created, err := c.Enqueue(ctx, queue, req)
	if err != nil {
		return err
	}
	if !created {
		fmt.Fprintf(stderr, "enqueue: idempotency key %q matched task %s; nothing new was enqueued\n", *idemKey, t.ID)
	}
	return printTask(stdout, cf.output, t)
}

// taskFlags are the flags describing the task to deliver, shared by
// `spool enqueue` and `spool schedules set` (whose runs enqueue it).
type taskFlags struct {
	headers                            headerList
	data, dataB64, contentType, method *string
	priority, maxAttempts              *int
	timeout                            *time.Duration
}

func (tf *taskFlags) register(fs *flag.FlagSet) {
	tf.headers = headerList{}
	tf.data = fs.String("data", "", "JSON payload; @FILE reads a file, - reads stdin")
	tf.dataB64 = fs.String("data-base64", "", "payload bytes, base64-encoded (exclusive with --data)")
	tf.contentType = fs.String("content-type", "", "payload content type (server default: application/json for --data)")
	tf.method = fs.String("method", "", "HTTP method of the delivery (server default: POST)")
	fs.Var(tf.headers, "H", "delivery header 'Name: value' (repeatable)")
	tf.priority = fs.Int("priority", task.DefaultPriority, fmt.Sprintf("%d (first) to %d (last)", task.MinPriority, task.MaxPriority))
	tf.maxAttempts = fs.Int("max-attempts", 0, "attempts before the task fails (server default: the queue's)")
	tf.timeout = fs.Duration("timeout", 0, "timeout of each attempt (server default: the queue's)")
}

// request checks the flags (given: those set) and builds the task for
// target; errors name cmd.
func (tf *taskFlags) request(cmd, target string, given map[string]bool, stdin io.Reader) (client.EnqueueRequest, error) {
	req := client.EnqueueRequest{
		Target:      client.Target{URL: target, Method: strings.ToUpper(*tf.method)},
		ContentType: *tf.contentType,
	}
	if len(tf.headers) > 0 {
		req.Target.Headers = tf.headers
	}
	if u, err := url.Parse(target); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return req, usagef("%s: URL must be an absolute http or https URL, got %q", cmd, target)
	}
	if given["data"] && given["data-base64"] {
		return req, usagef("%s: --data and --data-base64 are exclusive", cmd)
	}
	if given["data"] {
		payload, err := readData(*tf.data, stdin)
		if err != nil {
			return req, err
		}
		if !json.Valid(payload) {
			return req, usagef("%s: --data is not valid JSON (use --data-base64 for other bytes)", cmd)
		}
		req.Payload = payload
	}
	if given["data-base64"] {
		b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(*tf.dataB64))
		if err != nil {
			return req, usagef("%s: --data-base64 is not valid base64: %v", cmd, err)
		}
		req.RawPayload = b
		if len(b) == 0 {
			req.RawPayload = nil
		}
	}
	if given["priority"] {
		if *tf.priority < task.MinPriority || *tf.priority > task.MaxPriority {
			return req, usagef("%s: --priority must be %d-%d, got %d", cmd, task.MinPriority, task.MaxPriority, *tf.priority)
		}
		req.Priority = client.Ptr(*tf.priority)
	}
	if given["max-attempts"] {
		if *tf.maxAttempts < 1 || *tf.maxAttempts > task.MaxMaxAttempts {
			return req, usagef("%s: --max-attempts must be 1-%d, got %d", cmd, task.MaxMaxAttempts, *tf.maxAttempts)
		}
		req.MaxAttempts = *tf.maxAttempts
	}
	if given["timeout"] {
		if *tf.timeout <= 0 || *tf.timeout > task.MaxTimeout {
			return req, usagef("%s: --timeout must be above 0 and at most %s, got %s", cmd, task.MaxTimeout, *tf.timeout)
		}
		req.Timeout = *tf.timeout
	}
	if given["method"] && strings.TrimSpace(*tf.method) == "" {
		return req, usagef("%s: --method is empty", cmd)
	}
	return req, nil
}

// maxData bounds a payload read from a file or stdin; the server has its
// own limit, this only keeps the CLI from reading something absurd.
const maxData = 64 << 20

// readData resolves --data: literal JSON, @FILE, or - for stdin.
func readData(v string, stdin io.Reader) ([]byte, error) {
	var r io.Reader
	switch {
	case v == "-":
		r = stdin
	case strings.HasPrefix(v, "@"):
		f, err := os.Open(v[1:])
		if err != nil {
			return nil, usagef("enqueue: --data %s: %v", v, err)
		}
		defer f.Close()
		r = f
	default:
		return []byte(v), nil
	}
	b, err := io.ReadAll(io.LimitReader(r, maxData+1))
	if err != nil {
		return nil, fmt.Errorf("enqueue: read --data %s: %w", v, err)
	}
	if len(b) > maxData {
		return nil, usagef("enqueue: --data %s is larger than %d bytes", v, maxData)
	}
	return b, nil
}
