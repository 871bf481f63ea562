package store

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"
)

// GroupCommitOptions tune GroupCommit. The zero value is the default.
type GroupCommitOptions struct {
	// Committers is how many combined Enqueue calls may run at once
	// (default 2). While they all run, new calls wait and join the next.
	Committers int
	// MaxTasks caps the tasks of one combined call (default 1000). A call
	// with at least this many tasks runs on its own.
	MaxTasks int
	// Observe, if set, is told the number of calls and of tasks each
	// combined call carried (for metrics and benchmarks).
	Observe func(calls, tasks int)
}

// defaultGroupDeadline bounds a combined call whose callers set no
// deadline of their own.
const defaultGroupDeadline = 30 * time.Second

// GroupCommit returns s with group commit of Enqueue: calls that arrive
// while the database is busy with earlier ones are combined into one
// Enqueue call (one transaction) as soon as a committer is free, and each
// is answered only after that transaction commits. An idle service adds no
// wait: a call that finds a free committer starts at once. The combined
// call has the semantics of the calls run one after the other in arrival
// order (a later call repeating an earlier call's idempotency key gets the
// earlier task, marked Existing), and each call stays atomic. If the
// combined call fails for any reason other than the store being
// unavailable or out of time, each call is run again on its own, so that
// one call's bad task cannot fail the others. Every other method is s's.
func GroupCommit(s Store, opts GroupCommitOptions) Store {
	if opts.Committers <= 0 {
		opts.Committers = 2
	}
	if opts.MaxTasks <= 0 {
		opts.MaxTasks = 1000
	}
	return &groupCommit{Store: s, opts: opts}
}

type groupCommit struct {
	Store
	opts GroupCommitOptions

	mu      sync.Mutex
	pending []*enqueueCall // not yet taken by a committer, in arrival order
	running int            // committers running
}

type enqueueCall struct {
	ctx   context.Context
	tasks []NewTask
	taken bool // a committer has it (under groupCommit.mu)
	out   []Enqueued
	err   error
	done  chan struct{}
}

// SetEnqueueLeaser passes l to the wrapped store when it leases in its
// enqueues (LeasesOnEnqueue): a combined call then leases once, in its
// one transaction.
func (g *groupCommit) SetEnqueueLeaser(l EnqueueLeaser) {
	if le, ok := g.Store.(LeasesOnEnqueue); ok {
		le.SetEnqueueLeaser(l)
	}
}

// Enqueue queues the call for the next combined transaction and waits for
// its result. A caller whose context ends before a committer took its call
// gets the context's error and nothing of it is stored; once taken, the
// call's outcome is waited for (the combined call is bounded by the latest
// of its callers' deadlines), so the answer always tells what was stored.
func (g *groupCommit) Enqueue(ctx context.Context, tasks []NewTask) ([]Enqueued, error) {
	if len(tasks) == 0 || len(tasks) >= g.opts.MaxTasks {
		return g.Store.Enqueue(ctx, tasks)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c := &enqueueCall{ctx: ctx, tasks: tasks, done: make(chan struct{})}
	g.mu.Lock()
	g.pending = append(g.pending, c)
	if g.running < g.opts.Committers {
		g.running++
		go g.commitLoop()
	}
	g.mu.Unlock()

	select {
	case <-c.done:
	case <-ctx.Done():
		g.mu.Lock()
		if !c.taken {
			if i := slices.Index(g.pending, c); i >= 0 {
				g.pending = slices.Delete(g.pending, i, i+1)
			}
			g.mu.Unlock()
			return nil, ctx.Err()
		}
		g.mu.Unlock()
		<-c.done
	}
	return c.out, c.err
}

// commitLoop takes what is pending, commits it, and repeats until nothing
// is left.
func (g *groupCommit) commitLoop() {
	for {
		g.mu.Lock()
		if len(g.pending) == 0 {
			g.running--
			g.mu.Unlock()
			return
		}
		n, size := 0, 0
		for n < len(g.pending) && (n == 0 || size+len(g.pending[n].tasks) <= g.opts.MaxTasks) {
			size += len(g.pending[n].tasks)
			g.pending[n].taken = true
			n++
		}
		group := slices.Clone(g.pending[:n])
		g.pending = slices.Delete(g.pending, 0, n)
		g.mu.Unlock()
		g.commit(group)
	}
}

// commit runs one combined Enqueue for group and answers every call.
func (g *groupCommit) commit(group []*enqueueCall) {
	defer func() {
		for _, c := range group {
			close(c.done)
		}
	}()
	if len(group) == 1 {
		c := group[0]
		c.out, c.err = g.Store.Enqueue(c.ctx, c.tasks)
		g.observe(1, len(c.tasks))
		return
	}

	ctx, cancel := groupContext(group)
	defer cancel()
	var all []NewTask
	for _, c := range group {
		all = append(all, c.tasks...)
	}
	out, err := g.Store.Enqueue(ctx, all)
	if err == nil && len(out) != len(all) {
		err = errors.New("group commit: store returned a result per task of the wrong count")
	}
	if err == nil {
		g.observe(len(group), len(all))
		off := 0
		for _, c := range group {
			c.out = out[off : off+len(c.tasks) : off+len(c.tasks)]
			off += len(c.tasks)
		}
		return
	}
	if errors.Is(err, ErrUnavailable) || ctx.Err() != nil {
		for _, c := range group {
			c.err = err
		}
		return
	}
	// One call may carry what the store refuses (a duplicate task id):
	// run each alone so only that one fails.
	for _, c := range group {
		c.out, c.err = g.Store.Enqueue(ctx, c.tasks)
		g.observe(1, len(c.tasks))
	}
}

func (g *groupCommit) observe(calls, tasks int) {
	if g.opts.Observe != nil {
		g.opts.Observe(calls, tasks)
	}
}

// groupContext outlives any one caller leaving (the others still wait for
// the commit) and ends at the latest of their deadlines.
func groupContext(group []*enqueueCall) (context.Context, context.CancelFunc) {
	var latest time.Time
	for _, c := range group {
		d, ok := c.ctx.Deadline()
		if !ok {
			d = time.Now().Add(defaultGroupDeadline)
		}
		if d.After(latest) {
			latest = d
		}
	}
	return context.WithDeadline(context.WithoutCancel(group[0].ctx), latest)
}
