package pop3server_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/proxy/pop3server"
)

// interimSession sends pieces through the call's Interim from another
// goroutine, as a keepalive timer would, and then lets the call return
// once release is closed (at once if nil).
func interimSession(pieces []string, fail error, late chan<- error, release <-chan struct{}) func(*fakeSession) {
	return func(s *fakeSession) {
		s.retrHook = func(ctx context.Context) error {
			in := pop3server.InterimFrom(ctx)
			if in == nil {
				return errors.New("no Interim in the context of RETR")
			}
			var wg sync.WaitGroup
			wg.Go(func() {
				for _, p := range pieces {
					if err := in.Send([]byte(p)); err != nil {
						panic(err)
					}
				}
			})
			wg.Wait()
			if release != nil {
				<-release
			}
			if late != nil {
				go func() {
					time.Sleep(10 * time.Millisecond) // after the call has returned
					late <- in.Send([]byte("X-Late: 1\r\n"))
				}()
			}
			return fail
		}
	}
}

// TestInterimKeepsTheClientWaiting checks that bytes sent through the
// Interim go out at once behind "+OK message follows", dot-stuffed, that
// the message follows them without a status line of its own, and that a
// Send after the call has returned does nothing.
func TestInterimKeepsTheClientWaiting(t *testing.T) {
	late := make(chan error, 1)
	release := make(chan struct{})
	ts := startServer(t, pop3server.Options{Backend: &fakeBackend{configure: interimSession(
		[]string{"X-Wait: slow\r\n", "\t.\r\n", ".dotted: no\r\n"}, nil, late, release)}})
	c := ts.login(t)
	c.Cmd("RETR 1", "+OK message follows")
	c.Expect("X-Wait: slow") // while RETR is still running
	close(release)
	got := string(c.Multi())
	want := "\t.\r\n.dotted: no\r\n" + msg1
	if got != want {
		t.Errorf("RETR = %q, want %q", got, want)
	}
	if err := <-late; !errors.Is(err, pop3server.ErrInterimEnded) {
		t.Errorf("Send after the call returned = %v, want ErrInterimEnded", err)
	}
	c.Cmd("NOOP", "+OK*")
}

// TestInterimThenFailure checks that a call that fails after its answer
// has begun ends the connection without the terminating dot, so that the
// client cannot take a part for a whole message.
func TestInterimThenFailure(t *testing.T) {
	ts := startServer(t, pop3server.Options{Backend: &fakeBackend{configure: interimSession(
		[]string{"X-Wait: slow\r\n"}, &pop3server.Error{Code: "SYS/TEMP", Message: "scan failed"}, nil, nil)}})
	c := ts.login(t)
	c.Cmd("RETR 1", "+OK message follows")
	c.Expect("X-Wait: slow")
	for {
		line, err := c.ReadLine()
		if err != nil {
			break
		}
		if line == "." || strings.HasPrefix(line, "-ERR") {
			t.Fatalf("got %q after the answer had begun; want the connection closed", line)
		}
	}
}

// TestStuffedBody checks that a body marked Stuffed goes out as it is, not
// stuffed a second time, with a CRLF added where it lacks a final one and
// the terminator after it.
func TestStuffedBody(t *testing.T) {
	for body, want := range map[string]string{
		"..dotted\r\nplain\r\n": ".dotted\r\nplain\r\n",
		"no final line end":     "no final line end\r\n",
		"":                      "",
	} {
		ts := startServer(t, pop3server.Options{Backend: &fakeBackend{configure: func(s *fakeSession) {
			s.retrBody, s.retrStuffed = io.NopCloser(strings.NewReader(body)), true
		}}})
		c := ts.login(t)
		c.Cmd("RETR 1", "+OK message follows")
		if got := string(c.Multi()); got != want {
			t.Errorf("stuffed %q arrived as %q, want %q", body, got, want)
		}
	}
}
