//go:build unix

package scannertest_test

import "syscall"

// alive reports whether a process exists (signal 0 checks without
// sending anything).
func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }
