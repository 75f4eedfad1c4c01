package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/pop3proxy/pop3proxy/upstream/upstreamtest"
)

var (
	plainBinOnce sync.Once
	plainBin     string
	plainBinErr  error
)

// plainProxyBin builds pop3proxy without the race detector, whose shadow
// memory would swamp a memory measurement.
func plainProxyBin(t *testing.T) string {
	plainBinOnce.Do(func() {
		plainBin = filepath.Join(filepath.Dir(proxyBin), "pop3proxy-plain")
		out, err := exec.Command("go", "build", "-o", plainBin, ".").CombinedOutput()
		if err != nil {
			plainBinErr = fmt.Errorf("%v: %s", err, out)
		}
	})
	if plainBinErr != nil {
		t.Fatal(plainBinErr)
	}
	return plainBin
}

// procStatusKiB reads a "VmRSS:"-style field of /proc/PID/status in KiB.
func procStatusKiB(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("parsing %q: %v", line, err)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// A 16 MB message streams through the proxy: its peak resident memory
// grows by a small fraction of the message size, and the bytes arrive
// intact.
func TestLargeMessageStreams(t *testing.T) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("needs /proc to measure memory")
	}
	d := upstreamtest.StartDovecot(t, upstreamtest.DovecotOptions{Users: map[string]string{testUser: testPass}})
	var msg bytes.Buffer
	msg.WriteString("From: big@example.com\r\nSubject: 16 MB\r\n\r\n")
	line := strings.Repeat("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/ABCDEFGHIJ", 1) + "\r\n"
	for i := 0; msg.Len() < 16<<20; i++ {
		if i%1000 == 0 {
			msg.WriteString(".dot-stuffed line every thousand lines\r\n")
		}
		msg.WriteString(line)
	}
	d.Deliver(t, testUser, msg.Bytes())

	p := startProxyBin(t, plainProxyBin(t), relayConfig())

	c := loggedIn(t, "client", p, d)
	pid := p.cmd.Process.Pid
	before := procStatusKiB(t, pid, "VmHWM")
	c.Cmd("RETR 1", "+OK*")
	got := c.Multi()
	after := procStatusKiB(t, pid, "VmHWM")
	c.Cmd("QUIT", "+OK*")

	if want := upstreamtest.WireForm(msg.Bytes()); !bytes.Equal(got, want) {
		t.Fatalf("16 MB message arrived with %d bytes, want %d identical bytes", len(got), len(want))
	}
	growthKiB := after - before
	t.Logf("proxy peak RSS %d KiB before RETR, %d KiB after a %d-byte message: +%d KiB", before, after, msg.Len(), growthKiB)
	if limit := int64(msg.Len()/1024) / 4; growthKiB > limit {
		t.Fatalf("peak RSS grew by %d KiB relaying a %d KiB message (limit %d KiB): the message is being buffered",
			growthKiB, msg.Len()/1024, limit)
	}
}
