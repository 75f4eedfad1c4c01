// Package redistest runs a real redis-server for tests: unprivileged, on
// a free loopback port, in a temporary directory, persisting nothing.
package redistest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/internal/testinfra"
)

const stopTimeout = 5 * time.Second

// Redis is a redis-server started by Start, stopped when the test ends.
type Redis struct {
	Addr string // 127.0.0.1:port

	t    testing.TB
	bin  string
	dir  string
	port int
	d    *testinfra.Daemon
}

// Start runs redis-server (Debian package redis-server; the test is
// skipped, or fails under CI=true, without it) and waits until it answers
// PING.
func Start(t testing.TB) *Redis {
	t.Helper()
	r := &Redis{t: t, bin: testinfra.NeedBinary(t, "redis-server"), dir: testinfra.ShortTempDir(t, "redis")}
	launch := testinfra.Launch{
		Name:    "redis-server",
		Ports:   1,
		OutPath: filepath.Join(r.dir, "redis.out"),
		Prepare: func(ports []int) (*exec.Cmd, error) {
			r.port = ports[0]
			r.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
			return r.command(), nil
		},
		Ready:       func([]int) error { return Ping(r.Addr) },
		StopTimeout: stopTimeout,
	}
	r.d, _ = launch.Start(t)
	return r
}

// command runs redis-server in the foreground on loopback only, without
// RDB snapshots or an append-only file, logging to standard output.
func (r *Redis) command() *exec.Cmd {
	cmd := exec.Command(r.bin, "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1", "--protected-mode", "yes",
		"--save", "", "--appendonly", "no", "--dir", r.dir, "--daemonize", "no", "--logfile", "")
	cmd.Dir = r.dir
	return cmd
}

// Stop ends the server, as a crash or an outage would for its clients.
func (r *Redis) Stop() {
	r.t.Helper()
	if err := r.d.Stop(stopTimeout); err != nil {
		r.t.Error(err)
	}
}

// Restart starts the server again on the same port, empty, and waits
// until it answers.
func (r *Redis) Restart() {
	r.t.Helper()
	cmd := r.command()
	out, err := os.OpenFile(filepath.Join(r.dir, "redis.out"), os.O_WRONLY|os.O_APPEND, 0)
	if err == nil {
		cmd.Stdout, cmd.Stderr = out, out
		defer out.Close()
	}
	d, err := testinfra.StartDaemon(cmd)
	if err != nil {
		r.t.Fatal(err)
	}
	r.d = d
	r.t.Cleanup(func() { d.Stop(stopTimeout) })
	deadline := time.Now().Add(10 * time.Second)
	for Ping(r.Addr) != nil {
		if time.Now().After(deadline) {
			r.t.Fatalf("redis-server did not come back on %s", r.Addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Ping sends PING and expects +PONG.
func Ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

// Keys lists the keys in the server (KEYS *).
func (r *Redis) Keys() ([]string, error) {
	c, err := net.DialTimeout("tcp", r.Addr, time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("KEYS *\r\n")); err != nil {
		return nil, err
	}
	br := bufio.NewReader(c)
	head, err := br.ReadString('\n')
	if err != nil || len(head) < 3 || head[0] != '*' {
		return nil, fmt.Errorf("KEYS answered %q, %v", head, err)
	}
	n, err := strconv.Atoi(head[1 : len(head)-2])
	if err != nil {
		return nil, fmt.Errorf("KEYS answered %q", head)
	}
	keys := make([]string, 0, n)
	for range n {
		if _, err := br.ReadString('\n'); err != nil { // $length
			return nil, err
		}
		k, err := br.ReadString('\n')
		if err != nil {
			return nil, err
		}
		keys = append(keys, k[:len(k)-2])
	}
	return keys, nil
}
