package scannertest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/filter"
)

// Crowd measures how many requests a fake daemon has in progress at once,
// to test a filter's max_concurrent. The fake calls Hold before it
// answers: Hold waits until limit requests are in progress, then 200 ms
// longer for one beyond the limit to arrive if the client would send it,
// or 5 s at most.
type Crowd struct {
	limit     int32
	cur, peak atomic.Int32
	full      chan struct{}
	fullOnce  sync.Once
}

func NewCrowd(limit int) *Crowd {
	return &Crowd{limit: int32(limit), full: make(chan struct{})}
}

func (c *Crowd) Hold() {
	n := c.cur.Add(1)
	for p := c.peak.Load(); n > p && !c.peak.CompareAndSwap(p, n); p = c.peak.Load() {
	}
	if n >= c.limit {
		c.fullOnce.Do(func() { close(c.full) })
	}
	select {
	case <-c.full:
		time.Sleep(200 * time.Millisecond)
	case <-time.After(5 * time.Second):
	}
	// Before the reply: once the client has it, its slot is free.
	c.cur.Add(-1)
}

// Peak is the most requests that were in progress at once.
func (c *Crowd) Peak() int { return int(c.peak.Load()) }

// RunAtOnce passes n small messages through ch at once and fails the test
// for each one that is not delivered.
func RunAtOnce(t testing.TB, ch *filter.Chain, n int, meta filter.Meta) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			res := ch.Run(context.Background(), filter.NewMessage(fmt.Appendf(nil, "Subject: %d\r\n\r\nbody\r\n", i), meta))
			defer res.Close()
			if res.Outcome != filter.Deliver {
				t.Errorf("message %d: %v (%s)", i, res.Outcome, res.Reason)
			}
		})
	}
	wg.Wait()
}
