package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/internal/testinfra"
	"github.com/pop3proxy/pop3proxy/proxy/pop3server"
	"github.com/pop3proxy/pop3proxy/upstream/upstreamtest"
)

// commandTimeout bounds every external client, so a hung exchange fails
// the test instead of eating the whole go test timeout.
const commandTimeout = 30 * time.Second

// testWriter sends the server's log to t.Log, shown on failure and with -v.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// startServer runs the program in-process, as main would, on a free port
// with a fresh Maildir created by -init, and stops it with the equivalent of
// SIGTERM when the test ends, checking that it shuts down cleanly.
func startServer(t *testing.T, extraArgs ...string) (addr, dir string) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "Maildir")
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan net.Addr, 1)
	done := make(chan error, 1)
	args := append([]string{"-listen", "127.0.0.1:0", "-maildir", dir, "-init"}, extraArgs...)
	go func() { done <- run(ctx, args, testWriter{t}, ready) }()
	select {
	case a := <-ready:
		addr = a.String()
	case err := <-done:
		cancel()
		t.Fatalf("run: %v", err)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("server did not start")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run returned %v after shutdown", err)
			}
		case <-time.After(shutdownTimeout + 5*time.Second):
			t.Error("server did not shut down")
		}
	})
	return addr, dir
}

// command runs an external program with a deadline and returns its stdout.
func command(t *testing.T, stdin []byte, name string, args ...string) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if ctx.Err() != nil {
		t.Fatalf("%s timed out after %v; stderr:\n%s", name, commandTimeout, stderr.Bytes())
	}
	if err != nil {
		err = fmt.Errorf("%w; stderr: %s", err, stderr.Bytes())
	}
	return out, err
}

func sampleWire(i int) []byte { return upstreamtest.WireForm([]byte(sampleMessages[i])) }

func TestCurl(t *testing.T) {
	curl := testinfra.NeedBinary(t, "curl")
	addr, _ := startServer(t)
	base := "pop3://" + addr + "/"
	// curl logs in with APOP because the greeting carries a timestamp.
	auth := []string{"--silent", "--show-error", "--max-time", "20", "-u", "demo:demo"}

	out, err := command(t, nil, curl, append(auth, base)...)
	if err != nil {
		t.Fatalf("curl LIST: %v", err)
	}
	var want strings.Builder
	for i, m := range sampleMessages {
		fmt.Fprintf(&want, "%d %d\r\n", i+1, upstreamtest.ListSize([]byte(m)))
	}
	if string(out) != want.String() {
		t.Errorf("LIST = %q, want %q", out, want.String())
	}

	out, err = command(t, nil, curl, append(auth, "-X", "UIDL", base)...)
	if err != nil {
		t.Fatalf("curl UIDL: %v", err)
	}
	if lines := strings.Split(strings.TrimSuffix(string(out), "\r\n"), "\r\n"); len(lines) != len(sampleMessages) {
		t.Errorf("UIDL = %q", out)
	}

	for i := range sampleMessages {
		out, err := command(t, nil, curl, append(auth, fmt.Sprintf("%s%d", base, i+1))...)
		if err != nil {
			t.Fatalf("curl RETR %d: %v", i+1, err)
		}
		if !bytes.Equal(out, sampleWire(i)) {
			t.Errorf("RETR %d = %q, want %q", i+1, out, sampleWire(i))
		}
	}

	_, err = command(t, nil, curl, "--silent", "--max-time", "20", "-u", "demo:wrong", base+"1")
	var exit *exec.ExitError
	// 67: CURLE_LOGIN_DENIED.
	if !errors.As(err, &exit) || exit.ExitCode() != 67 {
		t.Errorf("curl with a wrong password: %v, want exit status 67", err)
	}
}

// poplibScript drives Python's poplib, a client that is not ours, through
// USER/PASS and APOP sessions, and prints what it saw as JSON. Messages are
// rebuilt from poplib's lines (dot-stuffing removed, CRLF stripped) by
// appending CRLF to each line.
const poplibScript = `
import base64, json, poplib, sys

host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
out = {}

def body(resp):
    return base64.b64encode(b"".join(l + b"\r\n" for l in resp[1])).decode()

p = poplib.POP3(host, port, timeout=15)
out["greeting"] = p.getwelcome().decode()
p.user(user)
p.pass_(password)
out["stat"] = list(p.stat())
out["list"] = [l.decode() for l in p.list()[1]]
out["uidl"] = [l.decode() for l in p.uidl()[1]]
out["retr"] = [body(p.retr(i + 1)) for i in range(out["stat"][0])]
out["top0"] = body(p.top(3, 0))
p.quit()

try:
    p = poplib.POP3(host, port, timeout=15)
    p.apop(user, "not-" + password)
    out["apop_wrong"] = "accepted"
except poplib.error_proto as e:
    out["apop_wrong"] = e.args[0].decode()

p = poplib.POP3(host, port, timeout=15)
p.apop(user, password)
out["apop_retr2"] = body(p.retr(2))
p.dele(1)
out["apop_quit"] = p.quit().decode()

json.dump(out, sys.stdout)
`

func TestPoplib(t *testing.T) {
	python := testinfra.NeedBinary(t, "python3")
	addr, dir := startServer(t, "-user", "pyuser", "-password", "py secret")
	host, port, _ := net.SplitHostPort(addr)

	out, err := command(t, nil, python, "-c", poplibScript, host, port, "pyuser", "py secret")
	if err != nil {
		t.Fatalf("python poplib: %v", err)
	}
	var got struct {
		Greeting  string   `json:"greeting"`
		Stat      []int64  `json:"stat"`
		List      []string `json:"list"`
		UIDL      []string `json:"uidl"`
		Retr      []string `json:"retr"`
		Top0      string   `json:"top0"`
		APOPWrong string   `json:"apop_wrong"`
		APOPRetr2 string   `json:"apop_retr2"`
		APOPQuit  string   `json:"apop_quit"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v in %s", err, out)
	}
	decode := func(s string) []byte {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	if !strings.HasPrefix(got.Greeting, "+OK ") || !strings.Contains(got.Greeting, "<") {
		t.Errorf("greeting %q has no APOP timestamp", got.Greeting)
	}
	var total int64
	for i, m := range sampleMessages {
		size := upstreamtest.ListSize([]byte(m))
		total += size
		if i < len(got.List) && got.List[i] != fmt.Sprintf("%d %d", i+1, size) {
			t.Errorf("LIST line %q, want size %d", got.List[i], size)
		}
		if i < len(got.Retr) && !bytes.Equal(decode(got.Retr[i]), sampleWire(i)) {
			t.Errorf("RETR %d = %q, want %q", i+1, decode(got.Retr[i]), sampleWire(i))
		}
	}
	if len(got.Stat) != 2 || got.Stat[0] != int64(len(sampleMessages)) || got.Stat[1] != total {
		t.Errorf("STAT %v, want [%d %d]", got.Stat, len(sampleMessages), total)
	}
	if len(got.List) != len(sampleMessages) || len(got.Retr) != len(sampleMessages) || len(got.UIDL) != len(sampleMessages) {
		t.Errorf("listed %d, retrieved %d, UIDL %d messages", len(got.List), len(got.Retr), len(got.UIDL))
	}
	hdr, _, _ := bytes.Cut(sampleWire(2), []byte("\r\n\r\n"))
	if top := decode(got.Top0); !bytes.Equal(top, append(hdr, "\r\n\r\n"...)) {
		t.Errorf("TOP 3 0 = %q", top)
	}

	if !strings.HasPrefix(got.APOPWrong, "-ERR [AUTH]") {
		t.Errorf("APOP with a wrong secret: %q", got.APOPWrong)
	}
	if !bytes.Equal(decode(got.APOPRetr2), sampleWire(1)) {
		t.Errorf("RETR 2 after APOP = %q", decode(got.APOPRetr2))
	}
	if !strings.HasPrefix(got.APOPQuit, "+OK") {
		t.Errorf("QUIT after DELE: %q", got.APOPQuit)
	}
	// QUIT returns after the UPDATE state, so the file is gone now.
	if n := countFiles(t, dir); n != len(sampleMessages)-1 {
		t.Errorf("%d messages left after DELE 1 + QUIT, want %d", n, len(sampleMessages)-1)
	}
}

func countFiles(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	for _, sub := range []string{"new", "cur"} {
		des, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil {
			t.Fatal(err)
		}
		n += len(des)
	}
	return n
}

// rawSession is a hand-driven POP3 connection for what clients do not do
// on purpose: dropping the connection, or racing for the lock.
type rawSession struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawSession {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s := &rawSession{t: t, c: c, r: bufio.NewReader(c)}
	if g := s.read(); !strings.HasPrefix(g, "+OK") {
		t.Fatalf("greeting %q", g)
	}
	return s
}

func (s *rawSession) read() string {
	s.t.Helper()
	s.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := s.r.ReadString('\n')
	if err != nil {
		s.t.Fatalf("read: %v", err)
	}
	return strings.TrimSuffix(line, "\r\n")
}

func (s *rawSession) cmd(line string) string {
	s.t.Helper()
	if _, err := fmt.Fprintf(s.c, "%s\r\n", line); err != nil {
		s.t.Fatal(err)
	}
	return s.read()
}

func TestDroppedConnectionKeepsMessages(t *testing.T) {
	addr, dir := startServer(t)
	s := dialRaw(t, addr)
	s.cmd("USER demo")
	if r := s.cmd("PASS demo"); !strings.HasPrefix(r, "+OK") {
		t.Fatalf("PASS: %q", r)
	}
	if r := s.cmd("DELE 1"); !strings.HasPrefix(r, "+OK") {
		t.Fatalf("DELE: %q", r)
	}
	s.c.Close()

	// The session is over once its lock is released; then the Maildir must
	// be unchanged (RFC 1939 §6: no UPDATE state without QUIT).
	deadline := time.Now().Add(10 * time.Second)
	for {
		mb, err := openMailbox(dir)
		if err == nil {
			mb.Close()
			break
		}
		if !errors.Is(err, pop3server.ErrInUse) || time.Now().After(deadline) {
			t.Fatalf("maildrop not released after the connection dropped: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := countFiles(t, dir); n != len(sampleMessages) {
		t.Errorf("%d messages after a dropped session, want %d", n, len(sampleMessages))
	}
}

func TestSecondSessionInUse(t *testing.T) {
	addr, _ := startServer(t)
	first := dialRaw(t, addr)
	first.cmd("USER demo")
	if r := first.cmd("PASS demo"); !strings.HasPrefix(r, "+OK") {
		t.Fatalf("first PASS: %q", r)
	}
	second := dialRaw(t, addr)
	second.cmd("USER demo")
	if r := second.cmd("PASS demo"); !strings.HasPrefix(r, "-ERR [IN-USE]") {
		t.Errorf("second PASS: %q, want -ERR [IN-USE]", r)
	}
	if r := first.cmd("QUIT"); !strings.HasPrefix(r, "+OK") {
		t.Errorf("QUIT: %q", r)
	}
	// The server answers QUIT before it closes the session and so releases
	// the lock: a client that logs in again at once may still be refused
	// for a moment.
	deadline := time.Now().Add(5 * time.Second)
	for {
		third := dialRaw(t, addr)
		third.cmd("USER demo")
		r := third.cmd("PASS demo")
		if strings.HasPrefix(r, "+OK") {
			break
		}
		if !strings.HasPrefix(r, "-ERR [IN-USE]") || time.Now().After(deadline) {
			t.Fatalf("PASS after the first session quit: %q", r)
		}
		third.c.Close()
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRunArguments(t *testing.T) {
	ctx := context.Background()
	var log bytes.Buffer
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "-maildir is required"},
		{[]string{"-maildir", t.TempDir()}, "-init"},
		{[]string{"-maildir", t.TempDir(), "extra"}, "unexpected arguments"},
		{[]string{"-maildir", t.TempDir(), "-init", "-password", ""}, "must not be empty"},
		{[]string{"-maildir", t.TempDir(), "-init", "-listen", "127.0.0.1:-1"}, "invalid port"},
	} {
		err := run(ctx, c.args, &log, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("run(%q) = %v, want an error containing %q", c.args, err, c.want)
		}
	}
}
