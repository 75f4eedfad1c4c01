package scannertest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/internal/testinfra"
)

const (
	// spamdReadyTimeout bounds spamd's start. It answers PING after about
	// 1 s on a 2-core machine (protocols.md §5.6); a loaded CI runner
	// compiling rules may take far longer.
	spamdReadyTimeout = 60 * time.Second
	// spamdStopTimeout bounds the wait for spamd to exit after SIGTERM
	// before its process group is killed.
	spamdStopTimeout = 10 * time.Second
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

	daemon *testinfra.Daemon
	launch testinfra.Launch
}

// StartSpamd starts Debian's spamd (package spamd, /usr/sbin/spamd) in the
// foreground on a free loopback port, as protocols.md §5.6 shows, and waits
// until it answers PING. The test is skipped when spamd is not installed,
// or fails then if integration tests are required
// (testinfra.IntegrationRequired).
//
// spamd runs with local tests only (-L, no DNS or network rules), no
// per-user configuration (-x), one child, and a site configuration of its
// own: the *.pre plugin lists of /etc/spamassassin, so that the same plugins
// load as in the installed system, and a local.cf that turns Bayes off.
// When the test runs as root spamd switches to nobody (-u), as it would
// otherwise warn and do anyway.
func StartSpamd(t testing.TB) *Spamd {
	t.Helper()
	bin := testinfra.NeedBinary(t, "spamd")

	// Not t.TempDir: its parent directory is private to this user, and
	// spamd's children run as nobody and read the site configuration.
	dir := testinfra.ShortTempDir(t, "spamd")
	site := filepath.Join(dir, "site")
	if err := writeSpamdSiteConfig(site); err != nil {
		t.Fatalf("spamd: site configuration: %v", err)
	}
	s := &Spamd{Dir: dir}
	s.launch = testinfra.Launch{
		Name:    "spamd",
		Ports:   1,
		OutPath: filepath.Join(dir, "spamd.out"),
		LogPath: filepath.Join(dir, "spamd.log"),
		Prepare: func(ports []int) (*exec.Cmd, error) {
			s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
			args := []string{
				"-L", "-x",
				"--max-children=1", "--min-children=1",
				"--listen=" + s.Addr,
				"--pidfile=" + filepath.Join(dir, "spamd.pid"),
				"--syslog=" + filepath.Join(dir, "spamd.log"),
				"--siteconfigpath=" + site,
			}
			if os.Geteuid() == 0 {
				args = append([]string{"-u", "nobody"}, args...)
			}
			cmd := exec.Command(bin, args...)
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "LC_ALL=C") // no Perl locale warnings
			return cmd, nil
		},
		Ready:        func([]int) error { return PingSpamd(s.Addr, time.Second) },
		StartTimeout: spamdReadyTimeout,
		StopTimeout:  spamdStopTimeout,
	}
	s.daemon, _ = s.launch.Start(t)
	return s
}

func writeSpamdSiteConfig(site string) error {
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

// LogTail returns the last n lines of spamd's output and log file, for
// failure messages.
func (s *Spamd) LogTail(n int) string { return s.launch.Output(n) }
