package sqlite

import (
	"context"
	"errors"
	"sync"
)

// hub is the in-process stand-in for LISTEN/NOTIFY: one SQLite file serves
// one process, so every writer that makes a task due is in this process.
type hub struct {
	mu     sync.Mutex
	subs   map[chan struct{}]struct{}
	done   chan struct{} // closed by close
	closed bool
}

func newHub() *hub {
	return &hub{subs: make(map[chan struct{}]struct{}), done: make(chan struct{})}
}

// Wakeups returns a channel that receives a signal after a commit that made
// a task due now. Signals coalesce (the buffer holds one) and a slow reader
// never blocks a writer. The channel closes when ctx ends or the store closes.
func (s *Store) Wakeups(ctx context.Context) (<-chan struct{}, error) {
	return s.hub.subscribe(ctx)
}

func (h *hub) subscribe(ctx context.Context) (<-chan struct{}, error) {
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, errors.New("wakeups: store closed")
	}
	h.subs[ch] = struct{}{}
	h.mu.Unlock()

	go func() {
		select {
		case <-ctx.Done():
		case <-h.done:
		}
		h.mu.Lock()
		// Closing under the lock, after removal, means broadcast never
		// sends on a closed channel.
		if _, ok := h.subs[ch]; ok {
			delete(h.subs, ch)
			close(ch)
		}
		h.mu.Unlock()
	}()
	return ch, nil
}

// broadcast signals every subscriber without blocking.
func (h *hub) broadcast() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs {
		select {
		case ch <- struct{}{}:
		default: // a signal is already pending: coalesce
		}
	}
}

func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.closed = true
	close(h.done)
	for ch := range h.subs {
		delete(h.subs, ch)
		close(ch)
	}
}
