package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Reconnect backoff of the LISTEN loop, and how often an idle LISTEN
// connection is probed: a peer that vanished without a FIN or RST (a
// partition, a killed VM) would otherwise leave it waiting forever.
const (
	listenBackoffMin = 100 * time.Millisecond
	listenBackoffMax = 5 * time.Second
	listenProbeEvery = 30 * time.Second
	listenProbeTime  = 5 * time.Second
)

// Wakeups returns a channel signalled when tasks become due in any replica.
// A dedicated connection (outside the pool, so it never holds a pool slot)
// LISTENs on spool_wakeup; when it drops, the loop reconnects with backoff
// and then signals once, since notifications sent meanwhile were lost. The
// channel has a buffer of one and sends never block, so bursts coalesce.
// It closes when ctx ends or the store is closed.
//
// The first LISTEN happens before Wakeups returns: a task enqueued after
// the call is always signalled (unless the connection drops).
func (s *Store) Wakeups(ctx context.Context) (<-chan struct{}, error) {
	if s.closing.Err() != nil {
		return nil, fmt.Errorf("wakeups: store closed")
	}
	ctx, cancel := context.WithCancel(ctx)
	stopOnClose := context.AfterFunc(s.closing, cancel)
	conn, err := s.listen(ctx)
	if err != nil {
		stopOnClose()
		cancel()
		return nil, wrap("wakeups", err)
	}
	ch := make(chan struct{}, 1)
	s.subsMu.Lock()
	s.subs[ch] = struct{}{}
	s.subsMu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer stopOnClose()
		defer cancel()
		defer close(ch)
		defer func() {
			s.subsMu.Lock()
			delete(s.subs, ch)
			s.subsMu.Unlock()
		}()
		s.listenLoop(ctx, conn, ch)
	}()
	return ch, nil
}

// listen opens a connection with the pool's settings and LISTENs.
func (s *Store) listen(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig.Copy())
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, "LISTEN "+wakeupChannel); err != nil {
		closeConn(conn)
		return nil, err
	}
	return conn, nil
}

func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = conn.Close(ctx)
}

func (s *Store) listenLoop(ctx context.Context, conn *pgx.Conn, ch chan struct{}) {
	signal := func() {
		select {
		case ch <- struct{}{}:
		default: // one pending signal is as good as many
		}
	}
	backoff := listenBackoffMin
	for {
		if conn == nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			var err error
			conn, err = s.listen(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				s.log.Warn("wakeups: reconnect failed", "error", err, "retry_in", backoff)
				backoff = min(2*backoff, listenBackoffMax)
				continue
			}
			s.log.Info("wakeups: reconnected")
			backoff = listenBackoffMin
			signal()
		}
		wctx, cancel := context.WithTimeout(ctx, s.probeEvery)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		if err == nil {
			if n.Payload != s.origin { // our own were signalled at commit
				signal()
			}
			continue
		}
		if ctx.Err() == nil && wctx.Err() != nil {
			// Idle for a while (a timeout leaves pgx's connection usable):
			// check the server still answers. Notifications arriving during
			// the probe are queued by pgx for the next wait.
			pctx, cancel := context.WithTimeout(ctx, listenProbeTime)
			_, err = conn.Exec(pctx, "SELECT 1")
			cancel()
			if err == nil {
				continue
			}
		}
		closeConn(conn)
		conn = nil
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("wakeups: connection lost", "error", err)
	}
}

// newOrigin is a random name for a Store's NOTIFY payloads.
func newOrigin() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

// wakeLocal signals this Store's own Wakeups channels, after a commit
// whose NOTIFY carries s.origin. Sends never block: a pending signal is as
// good as many.
func (s *Store) wakeLocal() {
	s.subsMu.Lock()
	defer s.subsMu.Unlock()
	for ch := range s.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}
