package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/internal/testinfra"
	"github.com/pop3proxy/pop3proxy/proxy/pop3server/pop3servertest"
)

// proxyBin is the pop3proxy binary built once for the black-box tests.
var proxyBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pop3proxy-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	proxyBin = filepath.Join(dir, "pop3proxy")
	build := exec.Command("go", "build", "-race", "-o", proxyBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building pop3proxy:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// syncBuffer collects a process's output for assertions and failure logs.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// proxyProcess is a running pop3proxy.
type proxyProcess struct {
	Addr       string
	configPath string
	cmd        *exec.Cmd
	logs       *syncBuffer
	done       chan struct{}
	err        error
}

// startProxy runs pop3proxy with the given configuration body; "listen" is
// added. It returns once the proxy serves its greeting.
func startProxy(t *testing.T, config string) *proxyProcess {
	t.Helper()
	return startProxyBin(t, proxyBin, config)
}

func startProxyBin(t *testing.T, bin, config string) *proxyProcess {
	t.Helper()
	p := &proxyProcess{Addr: testinfra.FreeAddr(t), configPath: filepath.Join(t.TempDir(), "config.yaml"), logs: &syncBuffer{}, done: make(chan struct{})}
	p.writeConfig(t, config)
	p.cmd = exec.Command(bin, "-config", p.configPath)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("pop3proxy output:\n%s", p.logs.String())
		}
	})
	addr := p.Addr
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if strings.HasPrefix(line, "+OK") {
				return p
			}
		}
		select {
		case <-p.done:
			t.Fatalf("pop3proxy exited: %v\n%s", p.err, p.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("pop3proxy did not serve on %s in time\n%s", addr, p.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// writeConfig writes the configuration file: config with "listen" at
// p.Addr and debug logging added, as startProxy does.
func (p *proxyProcess) writeConfig(t *testing.T, config string) {
	t.Helper()
	body := fmt.Sprintf("listen: %q\nlog:\n  level: debug\n%s", p.Addr, config)
	if err := os.WriteFile(p.configPath, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

// waitLog waits up to 10 s for the n-th occurrence of text in the log.
func (p *proxyProcess) waitLog(t *testing.T, text string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(p.logs.String(), text) < n {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %q (occurrence %d) in the log", text, n)
		}
		if !p.running() {
			t.Fatalf("pop3proxy exited (%v) while waiting for %q in the log", p.err, text)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitExit waits for the proxy to exit by itself and returns its error.
func (p *proxyProcess) waitExit(t *testing.T, within time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(within):
		t.Fatalf("pop3proxy still running after %v", within)
		return nil
	}
}

func (p *proxyProcess) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func (p *proxyProcess) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// dialPOP connects a scripted client and reads the greeting.
func dialPOP(t *testing.T, name, addr string) *pop3servertest.Client {
	t.Helper()
	c := pop3servertest.Dial(t, addr)
	c.Name, c.Timeout = name, 30*time.Second
	c.Expect("+OK*")
	return c
}

// runTool runs an external client with a deadline and returns its output.
func runTool(t *testing.T, timeout time.Duration, name string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\nstderr:\n%s\nstdout:\n%s", name, strings.Join(args, " "), err, stderr.String(), out)
	}
	return out
}
