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
	// spamdReadyTimeout: spamd needs a second, a loaded CI runner far more.
	spamdReadyTimeout = 60 * time.Second
	spamdStopTimeout  = 10 * time.Second
)

// spamdSiteConfig turns Bayes off, so that scores do not depend on earlier
// tests and spamd does not warn about a missing bayes.lock.
const spamdSiteConfig = `# Written by scannertest.StartSpamd.
use_bayes 0
bayes_auto_learn 0
`

// Spamd is a spamd started by StartSpamd, gone when the test ends.
type Spamd struct {
	Addr string // "127.0.0.1:port"; the filter's address is "tcp://" + Addr
	Dir  string // its pid file, spamd.log and site configuration (site/)

	daemon *testinfra.Daemon
	launch testinfra.Launch
}

// SpamdOptions configures StartSpamdWith.
type SpamdOptions struct {
	// MaxChildren is spamd's --max-children (default 1, which starts
	// fastest); more are forked as connections arrive, as with spamd's
	// default --min-children of 1.
	MaxChildren int
}

// SpamdDefaultMaxChildren is spamd's own default --max-children.
const SpamdDefaultMaxChildren = 5

// StartSpamd runs spamd with the default SpamdOptions.
func StartSpamd(t testing.TB) *Spamd {
	t.Helper()
	return StartSpamdWith(t, SpamdOptions{})
}

// StartSpamdWith waits until spamd answers PING. It runs with local tests
// only (-L), no per-user configuration (-x), /etc/spamassassin's *.pre
// and spamdSiteConfig; as root, as nobody (-u), as spamd would with a warning.
func StartSpamdWith(t testing.TB, opt SpamdOptions) *Spamd {
	t.Helper()
	bin := testinfra.NeedBinary(t, "spamd")
	children := opt.MaxChildren
	switch {
	case children == 0:
		children = 1
	case children < 0:
		t.Fatalf("scannertest: MaxChildren %d is negative", children)
	}

	// Not t.TempDir: its parent is private to this user, and spamd's
	// children run as nobody and read the site configuration.
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
				"--max-children=" + strconv.Itoa(children), "--min-children=1",
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

// PingSpamd expects PONG to PING from spamd at addr (host:port).
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

// Stop is called when the test ends; calling it earlier, or twice, is fine.
func (s *Spamd) Stop() error { return s.daemon.Stop(spamdStopTimeout) }

// LogTail returns the last n lines of spamd's output and log.
func (s *Spamd) LogTail(n int) string { return s.launch.Output(n) }
