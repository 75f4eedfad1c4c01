package testinfra

import (
	"syscall"
	"testing"
)

// A daemon is told to stop when the test binary dies, so a test killed by
// go test -timeout leaves no server behind.
func TestDaemonParentDeathSignal(t *testing.T) {
	if got := DaemonProcAttr().Pdeathsig; got != syscall.SIGTERM {
		t.Errorf("Pdeathsig = %v, want SIGTERM", got)
	}
}
