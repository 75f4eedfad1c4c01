package testinfra

import "syscall"

// DaemonProcAttr puts the daemon in its own process group, so that the
// whole tree (Dovecot forks login and mail processes) can be killed, and
// asks the kernel to send SIGTERM if the test process dies first, so that a
// test binary killed by -timeout leaves no daemon behind.
func DaemonProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
