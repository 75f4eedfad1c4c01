package pop3server_test

import (
	"context"
	"errors"
	"net"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/proxy/pop3server"
)

func TestShutdownCommand(t *testing.T) {
	t.Run("allowed", func(t *testing.T) {
		called := make(chan struct{})
		ts := startServer(t, pop3server.Options{
			Backend:       &fakeBackend{},
			AllowShutdown: func(c *pop3server.ConnInfo) bool { return true },
			OnShutdown:    func() { close(called) },
		})
		c := dial(t, ts.addr)
		c.Expect("+OK *")
		if caps := c.Capa(); slices.Contains(caps, "SHUTDOWN") {
			t.Errorf("CAPA announces SHUTDOWN: %q", caps)
		}
		c.Script(`
			C: shutdown
			S: +OK shutting down`)
		c.ExpectClosed()
		select {
		case <-called:
		case <-time.After(ioTimeout):
			t.Fatal("OnShutdown not called")
		}

		// Never after login.
		c = ts.login(t)
		c.Script(`
			C: SHUTDOWN
			S: -ERR unknown command`)
	})
	t.Run("refused", func(t *testing.T) {
		ts := startServer(t, pop3server.Options{
			Backend:       &fakeBackend{},
			AllowShutdown: func(c *pop3server.ConnInfo) bool { return false },
			OnShutdown:    func() { t.Error("OnShutdown called") },
		})
		c := dial(t, ts.addr)
		c.Script(`
			S: +OK *
			C: SHUTDOWN
			S: -ERR unknown command
			C: CAPA
			S: +OK *`)
	})
	t.Run("disabled", func(t *testing.T) {
		ts := startServer(t, pop3server.Options{Backend: &fakeBackend{}})
		c := dial(t, ts.addr)
		c.Script(`
			S: +OK *
			C: SHUTDOWN
			S: -ERR unknown command`)
	})
}

// slowChecker blocks CheckUser("slow") until released.
type slowChecker struct {
	*fakeBackend
	entered, release chan struct{}
}

func (b *slowChecker) CheckUser(ctx context.Context, c *pop3server.ConnInfo, name string) error {
	if name == "slow" {
		close(b.entered)
		<-b.release
	}
	return nil
}

// TestShutdownDrain checks that Shutdown sends away clients that have not
// logged in and lets logged-in ones finish with a QUIT that commits.
func TestShutdownDrain(t *testing.T) {
	goroutines := runtime.NumGoroutine()
	be := &slowChecker{fakeBackend: &fakeBackend{}, entered: make(chan struct{}), release: make(chan struct{})}
	ts := startServer(t, pop3server.Options{Backend: be})

	idle := dial(t, ts.addr)
	idle.Expect("+OK *")
	busy := dial(t, ts.addr)
	busy.Expect("+OK *")
	busy.Send("USER slow\r\nUSER next\r\n")
	<-be.entered
	txn := ts.login(t)
	txn.Script(`
		C: DELE 1
		S: +OK *`)

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*ioTimeout)
		defer cancel()
		done <- ts.Shutdown(ctx)
	}()
	waitFor(t, "draining", ts.Draining)
	ts.checkServed(t)
	if nc, err := net.DialTimeout("tcp", ts.addr, ioTimeout); err == nil {
		nc.Close()
		t.Error("listener still accepts connections")
	}

	idle.ExpectClosed()
	close(be.release)
	busy.Script(`
		S: +OK *
		S: -ERR [SYS/TEMP] server shutting down`)
	busy.ExpectClosed()

	time.Sleep(50 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v while a session was active", err)
	default:
	}
	txn.Script(`
		C: STAT
		S: +OK 2 *
		C: QUIT
		S: +OK *`)
	txn.ExpectClosed()

	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Shutdown = %v, want nil", err)
		}
	case <-time.After(ioTimeout):
		t.Fatal("Shutdown did not return after the last QUIT")
	}
	s := be.session(t, 0)
	if s.updates.Load() != 1 || s.closes.Load() != 1 {
		t.Errorf("Update called %d times, Close %d times; want 1, 1", s.updates.Load(), s.closes.Load())
	}
	waitFor(t, "server goroutines to exit", func() bool { return runtime.NumGoroutine() <= goroutines })
}

// TestShutdownTimeout checks that when ctx ends first, Shutdown closes what
// is left: no UPDATE, Close still called, session contexts cancelled.
func TestShutdownTimeout(t *testing.T) {
	inNoop := make(chan struct{})
	noopCancelled := make(chan struct{})
	be := &fakeBackend{configure: func(s *fakeSession) {
		s.noopHook = func(ctx context.Context) {
			close(inNoop)
			<-ctx.Done()
			close(noopCancelled)
		}
	}}
	ts := startServer(t, pop3server.Options{Backend: be})
	c := ts.login(t)
	c.Script(`
		C: DELE 1
		S: +OK *`)
	c.Send("NOOP\r\n")
	<-inNoop

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := ts.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want context.DeadlineExceeded", err)
	}
	select {
	case <-noopCancelled:
	case <-time.After(ioTimeout):
		t.Fatal("session context not cancelled by the forced close")
	}
	c.ExpectClosed()
	s := be.session(t, 0)
	waitFor(t, "session close", func() bool { return s.closes.Load() == 1 })
	if n := s.updates.Load(); n != 0 {
		t.Errorf("Update called %d times, want 0", n)
	}
}

func TestClose(t *testing.T) {
	be := &fakeBackend{}
	ts := startServer(t, pop3server.Options{Backend: be})
	auth := dial(t, ts.addr)
	auth.Expect("+OK *")
	txn := ts.login(t)
	if err := ts.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	ts.checkServed(t)
	auth.ExpectClosed()
	txn.ExpectClosed()
	s := be.session(t, 0)
	waitFor(t, "session close", func() bool { return s.closes.Load() == 1 })
	if n := s.updates.Load(); n != 0 {
		t.Errorf("Update called %d times, want 0", n)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := ts.Serve(ln); !errors.Is(err, pop3server.ErrServerClosed) {
		t.Errorf("Serve after Close = %v, want ErrServerClosed", err)
	}
}
