//go:build unix

package testinfra

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Stop ends the daemon and everything it forked, even a child that
// ignores SIGTERM, and a daemon that ignores SIGTERM is killed after the
// timeout and reported.
func TestDaemonStop(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	// The parent ignores SIGTERM; its background child ignores it too.
	script := `trap '' TERM; (trap '' TERM; echo $$ > /dev/null; sleep 30) & echo $! > ` + pidFile + `; sleep 30`
	d, err := StartDaemon(exec.Command("/bin/sh", "-c", script))
	if err != nil {
		t.Fatal(err)
	}
	var child int
	for deadline := time.Now().Add(5 * time.Second); child == 0; {
		if b, err := os.ReadFile(pidFile); err == nil && len(b) > 1 {
			child, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		}
		if time.Now().After(deadline) {
			t.Fatal("the script did not start its child")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := d.Stop(200 * time.Millisecond); err == nil {
		t.Error("Stop did not report a daemon that ignored SIGTERM")
	}
	select {
	case <-d.Exited():
	default:
		t.Fatal("daemon still running after Stop")
	}
	for deadline := time.Now().Add(5 * time.Second); syscall.Kill(child, 0) == nil && !isZombie(child); {
		if time.Now().After(deadline) {
			t.Fatalf("the daemon's child %d survived Stop", child)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if d.Stop(time.Second) == nil {
		t.Error("a second Stop forgot the first one's report")
	}
}

func isZombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && i+2 < len(b) && b[i+2] == 'Z'
}
