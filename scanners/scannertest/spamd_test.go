package scannertest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// gtubeSHA256 lets the test check GTUBE without holding the string.
const gtubeSHA256 = "4418994365912e23b756ec7f14960f1a89230e44e6acb74de055db7c092f8b9c"

func TestGTUBE(t *testing.T) {
	g := GTUBE()
	if len(g) != 68 {
		t.Fatalf("GTUBE is %d bytes, want 68", len(g))
	}
	sum := sha256.Sum256(g)
	if got := hex.EncodeToString(sum[:]); got != gtubeSHA256 {
		t.Fatalf("GTUBE SHA-256 = %s, want %s", got, gtubeSHA256)
	}
	g[0] = 'x'
	if GTUBE()[0] != 'X' {
		t.Fatal("GTUBE returns shared memory")
	}
}

// TestGTUBENotInRepository enforces the package's rule that no file of the
// module holds the GTUBE string. It walks the module from its go.mod.
func TestGTUBENotInRepository(t *testing.T) {
	root := moduleRoot(t)
	g := GTUBE()
	files := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if d.Name() == ".git" || d.Name() == "node_modules" {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if err != nil || info.Size() > 64<<20 {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil // a file being rewritten by an editor
		}
		files++
		if bytes.Contains(b, g) {
			t.Errorf("%s contains the GTUBE string; build it with scannertest.GTUBE() instead", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 10 {
		t.Fatalf("walked only %d files under %s; the module root is wrong", files, root)
	}
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test directory")
		}
		dir = parent
	}
}

// TestStartSpamd starts a real spamd, checks that it answers and that
// Stop leaves no process and no listener behind.
func TestStartSpamd(t *testing.T) {
	start := time.Now()
	s := StartSpamd(t)
	t.Logf("spamd ready on %s after %v", s.Addr, time.Since(start).Round(time.Millisecond))

	if err := PingSpamd(s.Addr, 5*time.Second); err != nil {
		t.Fatalf("PING: %v", err)
	}
	if !strings.HasPrefix(s.Addr, "127.0.0.1:") {
		t.Errorf("Addr = %q, want a 127.0.0.1 address", s.Addr)
	}
	for _, f := range []string{"spamd.pid", "spamd.log", "site/local.cf"} {
		if _, err := os.Stat(filepath.Join(s.Dir, f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	pgid := s.daemon.Pid()
	if n := liveProcessesInGroup(t, pgid); n < 2 {
		t.Errorf("%d live processes in spamd's group, want the parent and a child", n)
	}

	if err := s.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	// Processes killed by SIGKILL may take a moment to vanish.
	deadline := time.Now().Add(5 * time.Second)
	for liveProcessesInGroup(t, pgid) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("processes of spamd's group %d still running after Stop", pgid)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := PingSpamd(s.Addr, time.Second); err == nil {
		t.Fatal("spamd still answers PING after Stop")
	}
}

// liveProcessesInGroup counts the processes of a process group that are
// not zombies, from /proc: a killed child whose parent is gone may stay a
// zombie until init reaps it, but it runs nothing and holds no socket.
func liveProcessesInGroup(t *testing.T, pgid int) int {
	t.Helper()
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil || len(stats) == 0 {
		t.Skip("no /proc to inspect")
	}
	n := 0
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // exited meanwhile
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces and ')'.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 3 {
			continue
		}
		if g, _ := strconv.Atoi(f[2]); g == pgid && f[0] != "Z" {
			n++
		}
	}
	return n
}

// TestStartSpamdWithMaxChildren: spamd serves MaxChildren connections at
// once and no more. Requests that announce a body and send none each hold
// a child; with one child left PING is answered, with none it waits.
func TestStartSpamdWithMaxChildren(t *testing.T) {
	const n = SpamdDefaultMaxChildren
	s := StartSpamdWith(t, SpamdOptions{MaxChildren: n})
	hold := func() {
		c, err := net.DialTimeout("tcp", s.Addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := c.Write([]byte("SYMBOLS SPAMC/1.5\r\nContent-length: 100\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	for range n - 1 {
		hold()
	}
	// spamd forks the children it lacks as connections arrive.
	if err := PingSpamd(s.Addr, 10*time.Second); err != nil {
		t.Fatalf("PING with %d of %d children busy: %v", n-1, n, err)
	}
	hold()
	if err := PingSpamd(s.Addr, time.Second); err == nil {
		t.Fatalf("PING answered with all %d children busy: --max-children is not %d", n, n)
	}
}
