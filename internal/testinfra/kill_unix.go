//go:build unix

package testinfra

import (
	"os"
	"syscall"
)

func terminate(p *os.Process) { p.Signal(syscall.SIGTERM) }

// killGroup kills the process group DaemonProcAttr made.
func killGroup(pid int) { syscall.Kill(-pid, syscall.SIGKILL) }
