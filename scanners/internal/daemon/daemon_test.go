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
