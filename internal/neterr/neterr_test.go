package neterr

import (
	"errors"
	"net"
	"syscall"
	"testing"
)

// Cause keeps the reason and drops the address and step around it.
func TestCause(t *testing.T) {
	_, err := net.Dial("tcp", "127.0.0.1:1")
	got := Cause(err)
	if got.Error() != "connection refused" || !errors.Is(got, syscall.ECONNREFUSED) {
		t.Errorf("Cause(%q) = %q", err, got)
	}
	other := errors.New("clamd answered garbage")
	if Cause(other) != other {
		t.Error("Cause changed an error that is no *net.OpError")
	}
}
