//go:build unix && !linux

package testinfra

import "syscall"

// DaemonProcAttr puts the daemon in its own process group, so that the
// whole tree can be killed. There is no parent-death signal outside Linux.
func DaemonProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
