//go:build linux

package chaos

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Build compiles cmd/pop3proxy into dir and returns the binary's path;
// race adds the race detector, so that a data race the faults provoke
// ends the run.
func Build(dir string, race bool) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "pop3proxy")
	args := []string{"build", "-o", bin}
	if race {
		args = append(args, "-race")
	}
	out, err := exec.Command("go", append(args, "github.com/pop3proxy/pop3proxy/cmd/pop3proxy")...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
}

// Proxy is the proxy under test, run as a process so that it can be
// killed, stopped and reloaded by signal as in production.
type Proxy struct {
	Bin         string
	ConfigPath  string
	Addr        string // the POP3 listener
	MetricsAddr string
	SpoolDir    string

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	exitErr error
	out     *tail
	// expectExit is set before the harness stops the process; an exit
	// without it is a crash, kept in crashes.
	expectExit atomic.Bool
	ready      atomic.Bool // served its greeting: a failed start is not a crash
	crashes    []string
	http       *http.Client
}

// NewProxy prepares a Proxy; Start runs it.
func NewProxy(bin, configPath, addr, metricsAddr, spoolDir string) *Proxy {
	return &Proxy{
		Bin: bin, ConfigPath: configPath, Addr: addr, MetricsAddr: metricsAddr, SpoolDir: spoolDir,
		out: newTail(256 << 10),
		// No keep-alive: an idle scrape connection would count as a
		// goroutine the proxy holds.
		http: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}},
	}
}

// Start runs the proxy and waits until it serves its greeting.
func (p *Proxy) Start() error {
	cmd := exec.Command(p.Bin, "-config", p.ConfigPath)
	// A pipe, not a file: RLIMIT_FSIZE faults must not silence the log.
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
	p.expectExit.Store(false)
	p.ready.Store(false)
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.exitErr = err
		if p.ready.Load() && !p.expectExit.Load() {
			p.crashes = append(p.crashes, fmt.Sprintf("pop3proxy exited by itself (%v); output:\n%s", err, p.out.last(64<<10)))
		}
		p.mu.Unlock()
		close(done)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("pop3proxy exited at start: %v; output:\n%s", p.ExitErr(), p.out.last(4<<10))
		default:
		}
		if c, err := dialPOP3(p.Addr, "", 2*time.Second); err == nil {
			c.Close()
			p.ready.Store(true)
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.Kill()
	return fmt.Errorf("pop3proxy did not serve its greeting within 30s; output:\n%s", p.out.last(4<<10))
}

// Running says whether the process is alive.
func (p *Proxy) Running() bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// Pid is the running process's id, 0 if none.
func (p *Proxy) Pid() int {
	if !p.Running() {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd.Process.Pid
}

// ExitErr is how the last process ended.
func (p *Proxy) ExitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exitErr
}

// Crashes returns, and forgets, the exits the harness did not cause.
func (p *Proxy) Crashes() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.crashes
	p.crashes = nil
	return c
}

// Signal sends sig to the running process; SIGKILL and SIGTERM are
// expected to end it.
func (p *Proxy) Signal(sig syscall.Signal) error {
	if sig == syscall.SIGKILL || sig == syscall.SIGTERM {
		p.expectExit.Store(true)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return errors.New("not started")
	}
	return p.cmd.Process.Signal(sig)
}

// Wait waits up to d for the process to exit.
func (p *Proxy) Wait(d time.Duration) bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return true
	}
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// Kill sends SIGKILL and waits for the process to end.
func (p *Proxy) Kill() {
	if p.Running() {
		p.Signal(syscall.SIGKILL)
		p.Wait(time.Minute)
	}
}

// Output returns the tail of the proxy's log.
func (p *Proxy) Output() string { return p.out.String() }

// Metrics scrapes /metrics into name → value; a sample with labels is
// keyed as written, e.g. `pop3proxy_scanner_up{filter="clamav"}`.
func (p *Proxy) Metrics() (map[string]float64, error) {
	resp, err := p.http.Get("http://" + p.MetricsAddr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics: %s", resp.Status)
	}
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			m[line[:i]] = v
		}
	}
	return m, sc.Err()
}

// FDs returns how many file descriptors the process holds, and how many
// of them are spool files.
func (p *Proxy) FDs() (all, spool int, err error) {
	pid := p.Pid()
	if pid == 0 {
		return 0, 0, errors.New("not running")
	}
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0, err
	}
	for _, e := range entries {
		all++
		if target, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && strings.HasPrefix(target, p.SpoolDir+"/") {
			spool++
		}
	}
	return all, spool, nil
}

// RSS returns the process's resident set in bytes (VmRSS).
func (p *Proxy) RSS() int64 {
	return procStatus(p.Pid(), "VmRSS")
}

// procStatus reads a "kB" field of /proc/pid/status, in bytes; 0 if it
// cannot.
func procStatus(pid int, field string) int64 {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// tail keeps the last bytes written to it.
type tail struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func newTail(limit int) *tail { return &tail{max: limit} }

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

// last returns the last n bytes written, or fewer.
func (t *tail) last(n int) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf[max(0, len(t.buf)-n):])
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// freeAddr returns a loopback address nobody listens on now.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
