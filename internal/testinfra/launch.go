package testinfra

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Launch runs a daemon on loopback ports of its own for the length of a
// test. Another process may take a free port before the daemon binds it, so
// on "Address already in use" in its output Launch retries with new ports.
type Launch struct {
	// Name is the program's name, for messages.
	Name string
	// Ports is how many free loopback ports each attempt gets.
	Ports int
	// Prepare writes the configuration for ports and returns the command;
	// Launch sets its Stdout and Stderr and starts it with StartDaemon.
	Prepare func(ports []int) (*exec.Cmd, error)
	// Ready returns nil once the daemon serves on ports.
	Ready func(ports []int) error
	// OutPath receives the daemon's standard output and error; LogPath,
	// if set, is its own log file. Both are emptied before each attempt
	// and shown when the start or the test fails.
	OutPath, LogPath string
	// StartTimeout bounds each attempt (default 30s), StopTimeout the
	// wait for SIGTERM (default 5s).
	StartTimeout, StopTimeout time.Duration
}

const launchAttempts = 3

var errPortTaken = errors.New("address already in use")

// Start runs the daemon until the test ends and returns it with its
// ports; the test fails if the daemon does not start.
func (l Launch) Start(t testing.TB) (*Daemon, []int) {
	t.Helper()
	if l.StartTimeout == 0 {
		l.StartTimeout = 30 * time.Second
	}
	if l.StopTimeout == 0 {
		l.StopTimeout = 5 * time.Second
	}
	for attempt := 1; ; attempt++ {
		ports, err := FreePorts(l.Ports)
		if err != nil {
			t.Fatalf("%s: pick free ports: %v", l.Name, err)
		}
		d, err := l.attempt(ports)
		if err == nil {
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("%s output (ports %v):\n%s", l.Name, ports, l.Output(40))
				}
				if err := d.Stop(l.StopTimeout); err != nil {
					t.Errorf("%s: %v", l.Name, err)
				}
			})
			return d, ports
		}
		if errors.Is(err, errPortTaken) && attempt < launchAttempts {
			t.Logf("%s could not bind one of %v, retrying with other ports", l.Name, ports)
			continue
		}
		t.Fatalf("%s did not start: %v\n%s", l.Name, err, l.Output(40))
	}
}

func (l Launch) attempt(ports []int) (*Daemon, error) {
	for _, p := range []string{l.OutPath, l.LogPath} {
		if p == "" {
			continue
		}
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			return nil, err
		}
	}
	cmd, err := l.Prepare(ports)
	if err != nil {
		return nil, err
	}
	// A file, not a pipe: Wait would wait for every process holding a
	// pipe open, the daemon's children included.
	out, err := os.OpenFile(l.OutPath, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return nil, err
	}
	defer out.Close() // the daemon has its own copy
	cmd.Stdout, cmd.Stderr = out, out
	d, err := StartDaemon(cmd)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(l.StartTimeout)
	for {
		err := l.Ready(ports)
		if err == nil {
			return d, nil
		}
		select {
		case <-d.Exited():
			err = fmt.Errorf("exited during start-up (%v)", d.State())
		case <-time.After(50 * time.Millisecond):
			if time.Now().Before(deadline) {
				continue
			}
			err = fmt.Errorf("not ready within %v: %w", l.StartTimeout, err)
		}
		d.Stop(l.StopTimeout)
		if strings.Contains(l.Output(0), "Address already in use") {
			return nil, fmt.Errorf("%w: %v", errPortTaken, err)
		}
		return nil, err
	}
}

// Output returns the last n lines of the daemon's output and log (0: all).
func (l Launch) Output(n int) string {
	var all []byte
	for _, p := range []string{l.OutPath, l.LogPath} {
		if b, err := os.ReadFile(p); err == nil && p != "" {
			all = append(all, b...)
		}
	}
	lines := bytes.Split(bytes.TrimRight(all, "\n"), []byte("\n"))
	if n > 0 && len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// FreePorts returns n distinct loopback ports that were free a moment ago;
// the listeners stay open together so that the ports differ.
func FreePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// FreeAddr returns a 127.0.0.1 address nobody listened on a moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ports, err := FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", ports[0])
}

// ShortTempDir makes a directory, readable by all for daemons that drop
// privileges, removed when the test ends. It is in TMPDIR (or /tmp if that
// is long), not t.TempDir, because Unix socket paths must fit in 108 bytes.
func ShortTempDir(t testing.TB, prefix string) string {
	t.Helper()
	root := os.TempDir()
	if len(root) > 40 {
		root = "/tmp"
	}
	dir, err := os.MkdirTemp(root, prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}
