package upstream

import (
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/upstream/pop3test"
)

func TestResponseTooLarge(t *testing.T) {
	tests := []struct{ name, script, want string }{
		{"endless status line", `
			C: NOOP
			S!raw "+OK "
			S!repeat 100000 "AAAAAAAAAA"`, "status line longer than 1024 octets"},
		{"endless listing", `
			C: LIST
			S: +OK
			S!repeat 100000 "1 120\r\n"`, "exceeds 65536 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := pop3test.NewServer(t, greeting+tt.script)
			c := dial(t, srv.Addr(), Options{MaxResponseBytes: 64 << 10})
			var err error
			if strings.Contains(tt.script, "LIST") {
				_, err = c.List(0)
			} else {
				err = c.Noop()
			}
			wantConnErr(t, c, err)
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want the limit named (%q)", err, tt.want)
			}
		})
	}
}

func TestStalledServer(t *testing.T) {
	const timeout = 200 * time.Millisecond
	t.Run("command", func(t *testing.T) {
		srv := pop3test.NewServer(t, greeting+`
			C: NOOP
			S!sleep 5s`)
		c := dial(t, srv.Addr(), Options{Timeout: timeout})
		start := time.Now()
		err := c.Noop()
		checkTimeout(t, c, err, time.Since(start), timeout)
		srv.Wait(t)
	})
	t.Run("inside RETR", func(t *testing.T) {
		srv := pop3test.NewServer(t, greeting+`
			C: RETR 1
			S: +OK
			S: Subject: slow
			S!sleep 5s`)
		c := dial(t, srv.Addr(), Options{Timeout: timeout})
		m, err := c.Retr(1)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err = io.ReadAll(m)
		checkTimeout(t, c, err, time.Since(start), timeout)
		srv.Wait(t)
	})
	t.Run("greeting", func(t *testing.T) {
		srv := pop3test.NewServer(t, `S!sleep 5s`)
		start := time.Now()
		_, err := Dial(context.Background(), srv.Addr(), "", Options{DialTimeout: timeout})
		if !errors.Is(err, ErrConnection) {
			t.Fatalf("Dial = %v, want ErrConnection", err)
		}
		if d := time.Since(start); d < timeout*3/4 || d > 2*time.Second {
			t.Errorf("Dial failed after %v, want about %v", d, timeout)
		}
		srv.Wait(t)
	})
}

func checkTimeout(t *testing.T, c *Client, err error, took, timeout time.Duration) {
	t.Helper()
	wantConnErr(t, c, err)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("err = %v, want a deadline error", err)
	}
	if took < timeout*3/4 || took > 2*time.Second {
		t.Errorf("failed after %v, want about %v", took, timeout)
	}
}

func TestDialContextCancelled(t *testing.T) {
	srv := pop3test.NewServer(t, `S!sleep 5s`)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Dial(ctx, srv.Addr(), "", Options{DialTimeout: 5 * time.Second})
	if !errors.Is(err, ErrConnection) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Dial = %v, want ErrConnection and context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Dial took %v despite the context", d)
	}
	srv.Wait(t)
}

// TestAbortSendsNoQuit: the script ends after DELE, so a QUIT would fail the
// test in Wait.
func TestAbortSendsNoQuit(t *testing.T) {
	c, srv := loggedIn(t, `
		C: DELE 1
		S: +OK`, Options{})
	if err := c.Dele(1); err != nil {
		t.Fatal(err)
	}
	if err := c.Abort(); err != nil {
		t.Fatal(err)
	}
	if err := c.Abort(); err != nil { // idempotent
		t.Fatal(err)
	}
	if !c.Broken() {
		t.Error("Broken() = false after Abort")
	}
	if err := c.Noop(); !errors.Is(err, ErrConnection) {
		t.Errorf("Noop after Abort = %v", err)
	}
	srv.Wait(t)
}

func TestAbortUnblocks(t *testing.T) {
	tests := []struct {
		name, script string
		call         func(c *Client) error
	}{
		{"command", `
			C: NOOP
			S!sleep 10s`, func(c *Client) error { return c.Noop() }},
		{"RETR body", `
			C: RETR 1
			S: +OK
			S: Subject: x
			S!sleep 10s`, func(c *Client) error {
			m, err := c.Retr(1)
			if err != nil {
				return err
			}
			_, err = io.ReadAll(m)
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, srv := loggedIn(t, tt.script, Options{Timeout: 10 * time.Second})
			errc := make(chan error, 1)
			go func() { errc <- tt.call(c) }()
			time.Sleep(100 * time.Millisecond)
			c.Abort()
			select {
			case err := <-errc:
				if !errors.Is(err, ErrConnection) {
					t.Errorf("blocked call returned %v, want ErrConnection", err)
				}
			case <-time.After(3 * time.Second):
				t.Fatal("Abort did not unblock the call")
			}
			srv.Wait(t) // no QUIT arrived
		})
	}
}

func TestQuit(t *testing.T) {
	t.Run("ok", func(t *testing.T) {
		c, srv := loggedIn(t, `
			C: DELE 1
			S: +OK
			C: QUIT
			S: +OK dewey POP3 server signing off`, Options{})
		c.Dele(1)
		if err := c.Quit(); err != nil {
			t.Fatal(err)
		}
		if !c.Broken() {
			t.Error("usable after Quit")
		}
		srv.Wait(t)
	})
	t.Run("-ERR relayed", func(t *testing.T) {
		c, srv := loggedIn(t, `
			C: DELE 1
			S: +OK
			C: QUIT
			S: -ERR some deleted messages not removed`, Options{})
		c.Dele(1)
		err := c.Quit()
		var se *ServerError
		if !errors.As(err, &se) || se.Text != "some deleted messages not removed" {
			t.Fatalf("Quit = %v, want the server's -ERR", err)
		}
		if errors.Is(err, ErrConnection) {
			t.Errorf("Quit -ERR reported as a connection failure: %v", err)
		}
		srv.Wait(t)
	})
	t.Run("no answer", func(t *testing.T) {
		c, srv := loggedIn(t, `
			C: QUIT
			S!close`, Options{})
		if err := c.Quit(); !errors.Is(err, ErrConnection) {
			t.Fatalf("Quit = %v, want ErrConnection", err)
		}
		srv.Wait(t)
	})
	t.Run("message open", func(t *testing.T) {
		c, srv := loggedIn(t, `
			C: RETR 1
			S: +OK
			S: x
			S: .`, Options{})
		if _, err := c.Retr(1); err != nil {
			t.Fatal(err)
		}
		err := c.Quit()
		if !errors.Is(err, ErrMessageOpen) || !errors.Is(err, ErrConnection) {
			t.Fatalf("Quit = %v, want ErrMessageOpen and ErrConnection", err)
		}
		srv.Wait(t) // and no QUIT was sent
	})
}

// TestUnsolicitedData: bytes after a complete response are a protocol
// violation. pop3test sends them in the same write as the response.
func TestUnsolicitedData(t *testing.T) {
	t.Run("after a status line", func(t *testing.T) {
		c, srv := loggedIn(t, `
			C: NOOP
			S: +OK
			S!raw "+OK injected\r\n"`, Options{})
		wantConnErr(t, c, c.Noop())
		srv.Wait(t)
	})
	t.Run("after a listing", func(t *testing.T) {
		c, srv := loggedIn(t, `
			C: LIST
			S: +OK
			S: 1 120
			S: .
			S!raw "junk"`, Options{})
		_, err := c.List(0)
		wantConnErr(t, c, err)
		srv.Wait(t)
	})
	t.Run("after a message", func(t *testing.T) {
		c, srv := loggedIn(t, `
			C: RETR 1
			S: +OK
			S: body
			S: .
			S!raw "-ERR injected\r\n"`, Options{})
		m, err := c.Retr(1)
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.ReadAll(m)
		wantConnErr(t, c, err)
		srv.Wait(t)
	})
	t.Run("after the greeting", func(t *testing.T) {
		srv := pop3test.NewServer(t, `
			S: +OK ready
			S!raw "+OK early\r\n"`)
		if _, err := Dial(context.Background(), srv.Addr(), "", Options{}); !errors.Is(err, ErrConnection) {
			t.Fatalf("Dial = %v, want ErrConnection", err)
		}
		srv.Wait(t)
	})
}

// trickle is a script fragment that sends a line every 50ms for about d:
// never idle for Timeout, and never finished.
func trickle(d time.Duration) string {
	return strings.Repeat("S: trickle\nS!sleep 50ms\n", int(d/(50*time.Millisecond)))
}

// TestResponseTimeout: ResponseTimeout bounds a response however steadily it
// trickles in.
func TestResponseTimeout(t *testing.T) {
	const limit = 400 * time.Millisecond
	opts := Options{Timeout: 5 * time.Second, ResponseTimeout: limit}
	tests := []struct {
		name, script string
		call         func(c *Client) error
	}{
		{"RETR body", "C: RETR 1\nS: +OK\n" + trickle(5*time.Second), func(c *Client) error {
			m, err := c.Retr(1)
			if err != nil {
				return err
			}
			_, err = io.ReadAll(m)
			return err
		}},
		{"TOP body", "C: TOP 1 99999999\nS: +OK\n" + trickle(5*time.Second), func(c *Client) error {
			m, err := c.Top(1, 99999999)
			if err != nil {
				return err
			}
			_, err = io.ReadAll(m)
			return err
		}},
		{"listing", "C: UIDL\nS: +OK\n" + strings.ReplaceAll(trickle(5*time.Second), "trickle", "1 uid"), func(c *Client) error {
			_, err := c.Uidl(0)
			return err
		}},
		{"status line", "C: STAT\nS!raw \"+OK \"\n" + strings.Repeat("S!raw \"1\"\nS!sleep 50ms\n", 100), func(c *Client) error {
			_, _, err := c.Stat()
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := loggedIn(t, tt.script, opts)
			start := time.Now()
			err := tt.call(c)
			took := time.Since(start)
			wantConnErr(t, c, err)
			if !errors.Is(err, os.ErrDeadlineExceeded) || !strings.Contains(err.Error(), "ResponseTimeout") {
				t.Errorf("err = %v, want a deadline error naming ResponseTimeout", err)
			}
			if took < limit*3/4 || took > 3*time.Second {
				t.Errorf("failed after %v, want about %v", took, limit)
			}
		})
	}
}

// TestResponseTimeoutPerResponse: two slow responses in a row, each within
// ResponseTimeout but longer than it together, both succeed.
func TestResponseTimeoutPerResponse(t *testing.T) {
	const limit = 700 * time.Millisecond
	slowMsg := "S: +OK\n" + trickle(400*time.Millisecond) + "S: .\n"
	c, srv := loggedIn(t, "C: RETR 1\n"+slowMsg+"C: RETR 2\n"+slowMsg+"C: QUIT\nS: +OK\n",
		Options{Timeout: 5 * time.Second, ResponseTimeout: limit})
	start := time.Now()
	for n := 1; n <= 2; n++ {
		m, err := c.Retr(n)
		if err != nil {
			t.Fatal(err)
		}
		if body, err := io.ReadAll(m); err != nil || !strings.HasPrefix(string(body), "trickle\r\n") {
			t.Fatalf("RETR %d: %q, %v", n, body, err)
		}
	}
	if d := time.Since(start); d <= limit {
		t.Fatalf("both took %v, not longer than ResponseTimeout: the test proves nothing", d)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	srv.Wait(t)
}
