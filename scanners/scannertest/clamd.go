package scannertest

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/internal/testinfra"
)

// clamdStartTimeout is generous: CI runs many test binaries on few cores.
const (
	clamdStartTimeout = 30 * time.Second
	clamdStopTimeout  = 5 * time.Second
)

// ClamdEICARVirus is the name StartClamd's clamd reports for EICAR, with
// the suffix of unofficial signatures (docs/scanners.md, clamd replies).
const ClamdEICARVirus = "Eicar-Test-Signature-NDB.UNOFFICIAL"

// clamdSignature is db/eicar.ndb (docs/scanners.md, A clamd for tests).
func clamdSignature() string {
	return "Eicar-Test-Signature-NDB:0:*:" + hex.EncodeToString(EICAR()) + "\n"
}

// ClamdOptions configures StartClamdWith.
type ClamdOptions struct {
	// StreamMaxLength in clamd.conf's syntax (a number, optionally K or M);
	// default "1M", so that tests reach the limit quickly.
	StreamMaxLength string
}

// Clamd is a running clamd, stopped when the test that started it ends.
type Clamd struct {
	TCPAddr string // "127.0.0.1:port"
	Socket  string // the unix socket's path
	// Dir holds clamd.conf, db, the sockets, clamd.log and temporary files.
	Dir string

	logPath string
	outPath string
}

// TCPURL returns the TCP socket as a clamav address key.
func (c *Clamd) TCPURL() string { return "tcp://" + c.TCPAddr }

// UnixURL returns the unix socket as a clamav address key.
func (c *Clamd) UnixURL() string { return "unix://" + c.Socket }

// Log returns clamd's output and log so far, a line for every scan.
func (c *Clamd) Log() string {
	out, _ := os.ReadFile(c.outPath)
	log, _ := os.ReadFile(c.logPath)
	return string(out) + string(log)
}

// StartClamd runs clamd with the default ClamdOptions.
func StartClamd(t testing.TB) *Clamd {
	t.Helper()
	return StartClamdWith(t, ClamdOptions{})
}

var clamdSize = regexp.MustCompile(`^[0-9]+[KkMm]?$`)

// StartClamdWith loads only the EICAR signature (the official databases
// take tens of seconds and a gigabyte of memory) and waits for PING.
func StartClamdWith(t testing.TB, opt ClamdOptions) *Clamd {
	t.Helper()
	bin := testinfra.NeedBinary(t, "clamd")

	maxLen := opt.StreamMaxLength
	if maxLen == "" {
		maxLen = "1M"
	}
	if !clamdSize.MatchString(maxLen) {
		t.Fatalf("scannertest: StreamMaxLength %q is not a clamd.conf size (a number, optionally followed by K or M)", maxLen)
	}

	dir := testinfra.ShortTempDir(t, "clamd")
	if strings.ContainsAny(dir, " \t\"'\\#") {
		t.Fatalf("scannertest: temp dir %q has characters clamd.conf cannot take; set TMPDIR", dir)
	}
	for _, sub := range []string{"db", "tmp"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatalf("scannertest: %v", err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "db", "eicar.ndb"), []byte(clamdSignature()), 0o600); err != nil {
		t.Fatalf("scannertest: %v", err)
	}

	c := &Clamd{
		Dir:     dir,
		Socket:  filepath.Join(dir, "clamd.sock"),
		logPath: filepath.Join(dir, "clamd.log"),
		outPath: filepath.Join(dir, "clamd.out"),
	}
	confPath := filepath.Join(dir, "clamd.conf")
	launch := testinfra.Launch{
		Name:    "clamd",
		Ports:   1,
		OutPath: c.outPath,
		LogPath: c.logPath,
		Prepare: func(ports []int) (*exec.Cmd, error) {
			return exec.Command(bin, "-c", confPath), os.WriteFile(confPath, []byte(c.config(ports[0], maxLen)), 0o600)
		},
		Ready: func(ports []int) error {
			c.TCPAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
			if err := ClamdPing("unix", c.Socket); err != nil {
				return err
			}
			return ClamdPing("tcp", c.TCPAddr)
		},
		StartTimeout: clamdStartTimeout,
		StopTimeout:  clamdStopTimeout,
	}
	launch.Start(t)
	return c
}

// config is a complete clamd.conf: options not set keep the built-in
// defaults, not Debian's (docs/scanners.md, clamd limits).
func (c *Clamd) config(port int, streamMaxLength string) string {
	var s strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&s, format+"\n", args...) }
	w("# Written by github.com/pop3proxy/pop3proxy/scanners/scannertest.")
	w("Foreground yes")
	w("DatabaseDirectory %s", filepath.Join(c.Dir, "db"))
	w("LocalSocket %s", c.Socket)
	w("FixStaleSocket yes")
	w("TCPSocket %d", port)
	// Without TCPAddr clamd binds every address.
	w("TCPAddr 127.0.0.1")
	w("LogFile %s", c.logPath)
	w("LogTime yes")
	w("LogClean yes")
	w("PidFile %s", filepath.Join(c.Dir, "clamd.pid"))
	w("TemporaryDirectory %s", filepath.Join(c.Dir, "tmp"))
	w("StreamMaxLength %s", streamMaxLength)
	return s.String()
}

// ClamdPing expects "PONG\x00" to zPING within 2 s.
func ClamdPing(network, addr string) error {
	conn, err := net.DialTimeout(network, addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Write([]byte("zPING\x00")); err != nil {
		return err
	}
	reply, err := io.ReadAll(io.LimitReader(conn, 64))
	if err != nil {
		return err
	}
	if !bytes.Equal(reply, []byte("PONG\x00")) {
		return fmt.Errorf("PING answered %q", reply)
	}
	return nil
}
