package scannertest_test

import (
	"bytes"
	"crypto/md5"
	"encoding/binary"
	"encoding/hex"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/scanners/scannertest"
)

func TestEICAR(t *testing.T) {
	e := scannertest.EICAR()
	if len(e) != 68 {
		t.Fatalf("EICAR is %d bytes, want 68", len(e))
	}
	if sum := md5.Sum(e); hex.EncodeToString(sum[:]) != "44d88612fea8a8f36de82e1278abb02f" {
		t.Fatalf("EICAR has MD5 %x, want 44d88612fea8a8f36de82e1278abb02f (docs/scanners.md, A clamd for tests)", sum)
	}
	e[0] = 'x'
	if scannertest.EICAR()[0] == 'x' {
		t.Fatal("EICAR returns a shared slice")
	}
}

// TestEICARNotInRepository: no file of the scanners tree may hold the EICAR
// string, or virus scanners would flag the repository.
func TestEICARNotInRepository(t *testing.T) {
	e := scannertest.EICAR()
	files := 0
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		files++
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(b, e) {
			t.Errorf("%s contains the EICAR string", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 4 {
		t.Fatalf("walked only %d files; wrong directory?", files)
	}
}

// instream sends one INSTREAM scan in a single chunk and returns clamd's
// raw reply.
func instream(t *testing.T, network, addr string, data []byte) string {
	t.Helper()
	c, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	msg := []byte("zINSTREAM\x00")
	msg = binary.BigEndian.AppendUint32(msg, uint32(len(data)))
	msg = append(msg, data...)
	msg = append(msg, 0, 0, 0, 0)
	// clamd answers "size limit exceeded" before the stream ends; the
	// reply is read whatever the write did.
	c.Write(msg)
	reply, err := io.ReadAll(c)
	if err != nil && len(reply) == 0 {
		t.Fatalf("read reply: %v", err)
	}
	return string(reply)
}

func TestStartClamd(t *testing.T) {
	var pid int
	var dir string
	t.Run("running", func(t *testing.T) {
		c := scannertest.StartClamd(t)
		dir = c.Dir
		if !strings.HasPrefix(c.TCPAddr, "127.0.0.1:") {
			t.Errorf("TCPAddr = %q, want loopback", c.TCPAddr)
		}
		if c.TCPURL() != "tcp://"+c.TCPAddr || c.UnixURL() != "unix://"+c.Socket {
			t.Errorf("URLs %q %q do not match %q %q", c.TCPURL(), c.UnixURL(), c.TCPAddr, c.Socket)
		}
		for _, ep := range []struct{ network, addr string }{{"unix", c.Socket}, {"tcp", c.TCPAddr}} {
			if err := scannertest.ClamdPing(ep.network, ep.addr); err != nil {
				t.Errorf("PING over %s: %v", ep.network, err)
			}
			if got, want := instream(t, ep.network, ep.addr, scannertest.EICAR()), "stream: "+scannertest.ClamdEICARVirus+" FOUND\x00"; got != want {
				t.Errorf("EICAR over %s: reply %q, want %q", ep.network, got, want)
			}
			if got := instream(t, ep.network, ep.addr, []byte("hello\r\n")); got != "stream: OK\x00" {
				t.Errorf("clean data over %s: reply %q", ep.network, got)
			}
		}
		// Exactly StreamMaxLength (1M) is accepted, one byte more is not
		// (docs/scanners.md, clamd replies).
		if got := instream(t, "unix", c.Socket, make([]byte, 1<<20)); got != "stream: OK\x00" {
			t.Errorf("1 MiB stream: reply %q", got)
		}
		if got := instream(t, "unix", c.Socket, make([]byte, 1<<20+1)); got != "INSTREAM size limit exceeded. ERROR\x00" {
			t.Errorf("1 MiB + 1 stream: reply %q", got)
		}
		if !strings.Contains(c.Log(), "FOUND") {
			t.Errorf("clamd's log does not show the hit:\n%s", c.Log())
		}

		b, err := os.ReadFile(filepath.Join(c.Dir, "clamd.pid"))
		if err != nil {
			t.Fatal(err)
		}
		if pid, err = strconv.Atoi(strings.TrimSpace(string(b))); err != nil {
			t.Fatal(err)
		}
		// No User line: clamd keeps the test's identity, root or not.
		status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
		if err != nil {
			t.Skipf("no /proc: %v", err)
		}
		for _, line := range strings.Split(string(status), "\n") {
			if fields := strings.Fields(line); len(fields) >= 3 && fields[0] == "Uid:" {
				if fields[2] != strconv.Itoa(os.Geteuid()) {
					t.Errorf("clamd runs as uid %s, the test as %d", fields[2], os.Geteuid())
				}
			}
		}
	})
	if pid == 0 {
		return
	}
	if alive(pid) {
		t.Errorf("clamd (pid %d) still runs after its test ended", pid)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("clamd's directory %s left behind (%v)", dir, err)
	}
}

func TestStartClamdWithStreamMaxLength(t *testing.T) {
	c := scannertest.StartClamdWith(t, scannertest.ClamdOptions{StreamMaxLength: "2K"})
	if got := instream(t, "tcp", c.TCPAddr, make([]byte, 2048)); got != "stream: OK\x00" {
		t.Errorf("2 KiB stream: reply %q", got)
	}
	if got := instream(t, "tcp", c.TCPAddr, make([]byte, 2049)); got != "INSTREAM size limit exceeded. ERROR\x00" {
		t.Errorf("2 KiB + 1 stream: reply %q", got)
	}
}
