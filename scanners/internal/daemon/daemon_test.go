package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/internal/testinfra"
)

func TestReadError(t *testing.T) {
	err := fmt.Errorf("clamd x: %w", &ReadError{Err: errors.New("disk on fire")})
	if !IsReadError(err) || err.Error() != "clamd x: reading the message: disk on fire" {
		t.Errorf("%v: IsReadError %v", err, IsReadError(err))
	}
	if IsReadError(errors.New("clamd answered garbage")) {
		t.Error("another error taken for a read error")
	}
}

func TestPingFailure(t *testing.T) {
	_, err := net.Dial("tcp", "127.0.0.1:1")
	if got := PingFailure(context.Background(), err); got.Error() != "connection refused" || !errors.Is(got, syscall.ECONNREFUSED) {
		t.Errorf("refused: %v", got)
	}
	if got := PingFailure(context.Background(), os.ErrDeadlineExceeded); got != context.DeadlineExceeded {
		t.Errorf("deadline: %v", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if got := PingFailure(ctx, err); got != context.Canceled {
		t.Errorf("cancelled: %v", got)
	}
}

func TestQuote(t *testing.T) {
	if got := Quote("a\r\nb"); got != `"a\r\nb"` {
		t.Errorf("Quote = %s", got)
	}
	if got := Quote(strings.Repeat("x", 300)); len(got) != 205 || !strings.HasSuffix(got, `"...`) {
		t.Errorf("long Quote = %s (%d)", got, len(got))
	}
}

// A daemon that never answers costs an exchange its context's time: the
// deadline is the connection's, and a cancel ends a blocked read at once.
func TestConnect(t *testing.T) {
	addr := testinfra.Silent(t)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	conn, done, err := Connect(ctx, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	// The deadline or the close at the context's end, whichever fires first.
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Error("read from a silent daemon succeeded")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("read took %v with a 200ms context", d)
	}
	done()

	ctx, cancel = context.WithCancel(context.Background())
	conn, done, err = Connect(ctx, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	time.AfterFunc(50*time.Millisecond, cancel)
	start = time.Now()
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Error("read from a silent daemon succeeded")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("a cancelled exchange went on for %v", d)
	}
}
