package testinfra

import (
	"os"
	"syscall"
)

// DaemonProcAttr is nil: these daemons do not exist on Windows; it is here
// so that the tests of the packages using it build there.
func DaemonProcAttr() *syscall.SysProcAttr { return nil }

// terminate kills: Windows has no SIGTERM to send.
func terminate(p *os.Process) { p.Kill() }

// killGroup does nothing: no process group, and terminate killed the daemon.
func killGroup(int) {}
