package testinfra

import "syscall"

// DaemonProcAttr puts the daemon in its own process group, so that the
// whole tree (Dovecot forks login and mail processes) can be killed, and
// has the kernel send SIGTERM if the test binary dies first (as when
// killed by -timeout).
func DaemonProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
