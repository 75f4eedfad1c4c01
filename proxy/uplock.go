package proxy

import (
	"context"
	"sync"
	"time"
)

// upLock serializes the use of a session's upstream connection, which is
// lock-step (RFC 1939 §3: one command, then its whole answer) and shared
// by the client's commands, scan-ahead and the keepalives. It is first
// come, first served, and a place can be taken before it is waited for
// (enqueue), so a download scheduled while the client's command holds the
// connection runs before the client's next command: what the upstream
// sees does not depend on timing.
type upLock struct {
	mu      sync.Mutex
	held    bool
	waiters []*upTicket
	last    time.Time // when it was last released: the upstream's last exchange
}

func (l *upLock) lastUsed() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last
}

// upTicket is a place in the queue.
type upTicket struct {
	ready   chan struct{} // closed when the holder hands the connection over
	granted bool          // under upLock.mu
}

// enqueue takes a place in the queue; wait for it with wait.
func (l *upLock) enqueue() *upTicket {
	l.mu.Lock()
	defer l.mu.Unlock()
	t := &upTicket{ready: make(chan struct{})}
	if !l.held {
		l.held, t.granted = true, true
		close(t.ready)
		return t
	}
	l.waiters = append(l.waiters, t)
	return t
}

// wait blocks until t's turn, or until ctx ends, giving up the place.
func (l *upLock) wait(ctx context.Context, t *upTicket) error {
	select {
	case <-t.ready:
		return nil
	case <-ctx.Done():
	}
	l.mu.Lock()
	if t.granted {
		// Handed over just now: pass it on.
		l.mu.Unlock()
		l.unlock()
		return ctx.Err()
	}
	for i, w := range l.waiters {
		if w == t {
			l.waiters = append(l.waiters[:i], l.waiters[i+1:]...)
			break
		}
	}
	l.mu.Unlock()
	return ctx.Err()
}

// lock waits for the connection at the end of the queue.
func (l *upLock) lock(ctx context.Context) error { return l.wait(ctx, l.enqueue()) }

// tryLock takes the connection only if nobody holds it.
func (l *upLock) tryLock() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.held {
		return false
	}
	l.held = true
	return true
}

// unlock hands the connection to the first waiter, or frees it.
func (l *upLock) unlock() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.last = time.Now()
	if len(l.waiters) > 0 {
		t := l.waiters[0]
		l.waiters = l.waiters[1:]
		t.granted = true
		close(t.ready)
		return
	}
	l.held = false
}

// upHold is one holding of the connection, released once: by the code that
// took it, or by the Close of a body still reading from the upstream.
type upHold struct {
	l    *upLock
	done bool
}

// Close releases the connection; later calls do nothing.
func (h *upHold) Close() error {
	if h != nil && !h.done {
		h.done = true
		h.l.unlock()
	}
	return nil
}
