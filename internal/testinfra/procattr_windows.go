package testinfra

import (
	"os"
	"syscall"
)

// DaemonProcAttr has nothing to add on Windows, where the daemons these
// tests run do not exist; it is here so that the tests of the packages
// using it build there.
func DaemonProcAttr() *syscall.SysProcAttr { return nil }

// terminate kills: Windows has no SIGTERM to send.
func terminate(p *os.Process) { p.Kill() }

// killGroup does nothing: there is no process group to kill, and terminate
// has killed the daemon itself.
func killGroup(int) {}
