package testinfra

import (
	"fmt"
	"os"
	"os/exec"
	"sync"
	"time"
)

// Daemon is a server program a test runs in the background.
type Daemon struct {
	cmd     *exec.Cmd
	exited  chan struct{}
	once    sync.Once
	stopErr error
}

// StartDaemon starts cmd with DaemonProcAttr, so that Stop reaches every
// process it forks.
func StartDaemon(cmd *exec.Cmd) (*Daemon, error) {
	cmd.SysProcAttr = DaemonProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	d := &Daemon{cmd: cmd, exited: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(d.exited)
	}()
	return d, nil
}

// Pid is the daemon's process id, which is also its process group id.
func (d *Daemon) Pid() int { return d.cmd.Process.Pid }

// Exited is closed when the daemon's main process has exited.
func (d *Daemon) Exited() <-chan struct{} { return d.exited }

// State describes how the daemon exited; valid once Exited is closed.
func (d *Daemon) State() *os.ProcessState { return d.cmd.ProcessState }

// Stop sends SIGTERM (a master process then stops its children), kills the
// group if the daemon outlives timeout, then what is left of it (a group id
// is not reused while a member lives, so only the daemon's processes are
// hit). It reports a daemon that had to be killed; it may be called again.
func (d *Daemon) Stop(timeout time.Duration) error {
	d.once.Do(func() {
		pid := d.cmd.Process.Pid
		terminate(d.cmd.Process)
		select {
		case <-d.exited:
		case <-time.After(timeout):
			d.stopErr = fmt.Errorf("%s did not exit within %v of SIGTERM; killed", d.cmd.Path, timeout)
			killGroup(pid)
			<-d.exited
		}
		killGroup(pid) // ESRCH: nothing left
	})
	return d.stopErr
}
