package scannertest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/upstream/upstreamtest"
)

const (
	// spamdReadyTimeout bounds spamd's start. It answers PING after about
	// 1 s on a 2-core machine (protocols.md §5.6); a loaded CI runner
	// compiling rules may take far longer.
	spamdReadyTimeout = 60 * time.Second
	// spamdStopTimeout bounds the wait for spamd to exit after SIGTERM
	// before its process group is killed.
	spamdStopTimeout = 10 * time.Second
	// spamdStartAttempts: the free port is found by binding port 0 and
	// closing it, so another process may take it before spamd binds it.
	spamdStartAttempts = 3
)

// spamdSiteConfig is the local.cf of the test spamd: no Bayes, so that
// scores do not depend on what earlier tests taught it and spamd does not
// warn about /nonexistent/.spamassassin/bayes.lock (protocols.md §5.6).
const spamdSiteConfig = `# Written by scannertest.StartSpamd.
use_bayes 0
bayes_auto_learn 0
`

// Spamd is a SpamAssassin spamd started for a test by StartSpamd. It is
// stopped, and its directory removed, when the test ends.
type Spamd struct {
	// Addr is the host:port of its TCP listener on 127.0.0.1; the
	// spamassassin filter's address is "tcp://" + Addr.
	Addr string
	// Dir holds its pid file, its log (spamd.log) and its site
	// configuration (site/).
	Dir string

	daemon *upstreamtest.Daemon
}

// StartSpamd starts Debian's spamd (package spamd, /usr/sbin/spamd) in the
// foreground on a free loopback port, as protocols.md §5.6 shows, and waits
// until it answers PING. The test is skipped when spamd is not installed,
// or fails then if integration tests are required
// (upstreamtest.IntegrationRequired).
//
// spamd runs with local tests only (-L, no DNS or network rules), no
// per-user configuration (-x), one child, and a site configuration of its
// own: the *.pre plugin lists of /etc/spamassassin, so that the same plugins
// load as in the installed system, and a local.cf that turns Bayes off.
// When the test runs as root spamd switches to nobody (-u), as it would
// otherwise warn and do anyway.
func StartSpamd(t testing.TB) *Spamd {
	t.Helper()
	bin := upstreamtest.NeedBinary(t, "spamd")

	// Not t.TempDir: its parent directory is private to this user, and
	// spamd's children run as nobody and read the site configuration.
	dir, err := os.MkdirTemp("", "pop3proxy-spamd-")
	if err != nil {
		t.Fatalf("spamd: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	site := filepath.Join(dir, "site")
	if err := writeSpamdSiteConfig(dir, site); err != nil {
		t.Fatalf("spamd: site configuration: %v", err)
	}

	var lastErr error
	for attempt := 1; attempt <= spamdStartAttempts; attempt++ {
		s, err := launchSpamd(t, bin, dir, site)
		if err == nil {
			return s
		}
		lastErr = err
		if !errors.Is(err, errSpamdPortTaken) {
			break
		}
	}
	t.Fatalf("spamd did not start: %v", lastErr)
	return nil
}

var errSpamdPortTaken = errors.New("port taken")

func writeSpamdSiteConfig(dir, site string) error {
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(site, 0o755); err != nil {
		return err
	}
	pres, _ := filepath.Glob("/etc/spamassassin/*.pre")
	for _, p := range pres {
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(site, filepath.Base(p)), b, 0o644); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(site, "local.cf"), []byte(spamdSiteConfig), 0o644)
}

// launchSpamd starts one spamd and waits until it answers PING. On failure
// the process is stopped and the error carries the end of its log.
func launchSpamd(t testing.TB, bin, dir, site string) (*Spamd, error) {
	t.Helper()
	port, err := spamdFreePort()
	if err != nil {
		return nil, err
	}
	s := &Spamd{
		Addr: net.JoinHostPort("127.0.0.1", port),
		Dir:  dir,
	}
	logPath := filepath.Join(dir, "spamd.log")
	os.Remove(logPath) // a log of an earlier attempt would mislead
	// Output goes to a file, not a pipe: exec's Wait would wait for every
	// process holding a pipe open, spamd's children included.
	out, err := os.Create(filepath.Join(dir, "spamd.out"))
	if err != nil {
		return nil, err
	}
	defer out.Close() // spamd has its own copy once started
	args := []string{
		"-L", "-x",
		"--max-children=1", "--min-children=1",
		"--listen=" + s.Addr,
		"--pidfile=" + filepath.Join(dir, "spamd.pid"),
		"--syslog=" + logPath,
		"--siteconfigpath=" + site,
	}
	if os.Geteuid() == 0 {
		args = append([]string{"-u", "nobody"}, args...)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C") // no Perl locale warnings
	cmd.Stdout, cmd.Stderr = out, out
	// A process group of its own, so that Stop can kill spamd's children
	// too should the parent not take them down.
	if s.daemon, err = upstreamtest.StartDaemon(cmd); err != nil {
		return nil, err
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("spamd: %v", err)
		}
	})

	deadline := time.Now().Add(spamdReadyTimeout)
	for {
		if err := PingSpamd(s.Addr, time.Second); err == nil {
			return s, nil
		}
		select {
		case <-s.daemon.Exited():
			tail := s.LogTail(20)
			if strings.Contains(tail, "Address already in use") {
				return nil, fmt.Errorf("%w: %s", errSpamdPortTaken, s.Addr)
			}
			return nil, fmt.Errorf("spamd exited before answering PING (%v); log:\n%s", s.daemon.State(), tail)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("spamd did not answer PING on %s within %v; log:\n%s", s.Addr, spamdReadyTimeout, s.LogTail(20))
		}
	}
}

// PingSpamd sends PING to spamd at addr (host:port) and checks for the
// PONG reply, "SPAMD/1.5 0 PONG" (protocols.md §5.2).
func PingSpamd(addr string, timeout time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte("PING SPAMC/1.5\r\n\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("PING: %v", err)
	}
	if f := strings.Fields(line); len(f) != 3 || !strings.HasPrefix(f[0], "SPAMD/") || f[1] != "0" || f[2] != "PONG" {
		return fmt.Errorf("PING: unexpected reply %q", line)
	}
	return nil
}

// Stop stops spamd: SIGTERM, which makes it stop its children, then after
// spamdStopTimeout SIGKILL; then SIGKILL to its whole process group, so
// that no child outlives the test. It is called when the test ends; calling
// it earlier, and more than once, is fine.
func (s *Spamd) Stop() error { return s.daemon.Stop(spamdStopTimeout) }

// LogTail returns the last n lines of spamd's log file and of its output
// (spamd.out), for failure messages.
func (s *Spamd) LogTail(n int) string {
	var b strings.Builder
	if log, err := os.ReadFile(filepath.Join(s.Dir, "spamd.log")); err == nil {
		b.WriteString(spamdLastLines(log, n))
	}
	if out, err := os.ReadFile(filepath.Join(s.Dir, "spamd.out")); err == nil && len(out) > 0 {
		b.WriteString("--- output:\n")
		b.WriteString(spamdLastLines(out, n))
	}
	return b.String()
}

func spamdLastLines(b []byte, n int) string {
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n"))) + "\n"
}

// spamdFreePort returns a TCP port on 127.0.0.1 that was free a moment
// ago. spamd binds its own socket, so a listener cannot be handed over.
func spamdFreePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	_, port, err := net.SplitHostPort(l.Addr().String())
	return port, err
}
