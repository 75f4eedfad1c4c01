package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/pop3proxy/pop3proxy/proxy/pop3server/pop3servertest"
	"github.com/pop3proxy/pop3proxy/scanners/scannertest"
	"github.com/pop3proxy/pop3proxy/upstream/upstreamtest"
)

// bigMessage returns a message of size octets, distinct per seed, with
// dot-stuffed lines along the way.
func bigMessage(size, seed int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: load@example.com\r\nSubject: load %d\r\n\r\n", seed)
	line := fmt.Sprintf("%076d\r\n", seed)
	for i := 0; b.Len() < size; i++ {
		if i%997 == 0 {
			b.WriteString(".a dot-stuffed line\r\n")
		}
		b.WriteString(line)
	}
	return b.Bytes()
}

// dovecotUsers returns n users with one password, for tests with more
// sessions than Dovecot allows one user from one address.
func dovecotUsers(n int) map[string]string {
	users := map[string]string{}
	for i := range n {
		users[fmt.Sprintf("user%d", i)] = testPass
	}
	return users
}

// TestFilteredMemoryBudget checks that limits.buffer_memory bounds what
// messages under max_size cost: 20 sessions at once each retrieve two
// 16 MB messages through a header filter (so every message is held and
// edited), every byte arrives as stored apart from the added field, and
// the proxy's peak memory stays under 320 MB with buffer_memory 256MiB,
// where holding every message in flight would take about 640 MB.
func TestFilteredMemoryBudget(t *testing.T) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("needs /proc to measure memory")
	}
	const (
		sessions  = 20
		perUser   = 2 // sessions per Dovecot user, well under its 10 per user and address
		msgSize   = 16 << 20
		limitKiB  = 320 << 10
		addedLine = "X-Scanned-By: pop3proxy\r\n"
	)
	d := upstreamtest.StartDovecot(t, upstreamtest.DovecotOptions{Users: dovecotUsers(sessions / perUser)})
	want := map[string][2][]byte{}
	for u := range sessions / perUser {
		user := fmt.Sprintf("user%d", u)
		var msgs [2][]byte
		for i := range msgs {
			m := bigMessage(msgSize, u*2+i)
			d.Deliver(t, user, m)
			msgs[i] = append([]byte(addedLine), upstreamtest.WireForm(m)...)
		}
		want[user] = msgs
	}
	p := startProxyBin(t, plainProxyBin(t), relayConfig()+`max_size: 20MiB
limits:
  buffer_memory: 256MiB
filters:
  - type: header
    add: {X-Scanned-By: pop3proxy}
`)
	pid := p.cmd.Process.Pid
	before := procStatusKiB(t, pid, "VmHWM")

	start := make(chan struct{})
	var wg sync.WaitGroup
	for s := range sessions {
		user := fmt.Sprintf("user%d", s/perUser)
		c := dialPOP(t, fmt.Sprintf("session-%d", s), p.Addr)
		c.Cmd("USER "+user+"%"+d.Addr, "+OK*")
		c.Cmd("PASS "+testPass, "+OK*")
		wg.Go(func() {
			<-start
			for i, w := range want[user] {
				c.Cmd(fmt.Sprintf("RETR %d", i+1), "+OK*")
				if got := c.Multi(); !bytes.Equal(got, w) {
					t.Errorf("session %d message %d: %d bytes, want %d identical ones", s, i+1, len(got), len(w))
				}
			}
			c.Cmd("QUIT", "+OK*")
		})
	}
	close(start)
	wg.Wait()
	after := procStatusKiB(t, pid, "VmHWM")
	t.Logf("proxy peak RSS %d KiB before, %d KiB after %d sessions each retrieved two %d MiB messages through a header filter (buffer_memory 256MiB)",
		before, after, sessions, msgSize>>20)
	if after > limitKiB {
		t.Fatalf("peak RSS %d KiB, want under %d KiB", after, limitKiB)
	}
}

// TestScannersUnderLoad checks that 30 sessions fetching at once through a
// real clamd and spamd are all served: max_concurrent keeps each daemon
// within what it serves at once, so nothing overflows into a tempfail.
func TestScannersUnderLoad(t *testing.T) {
	const sessions, perUser = 30, 6
	d := upstreamtest.StartDovecot(t, upstreamtest.DovecotOptions{Users: dovecotUsers(sessions / perUser)})
	gtube := scannertest.GTUBE()
	for u := range sessions / perUser {
		user := fmt.Sprintf("user%d", u)
		d.Deliver(t, user, []byte("From: a@example.com\r\nSubject: ham\r\n\r\nan ordinary message\r\n"))
		d.Deliver(t, user, append([]byte("From: b@example.com\r\nSubject: spam\r\n\r\n"), append(gtube, "\r\n"...)...))
	}
	clamd := scannertest.StartClamd(t)
	spamd := scannertest.StartSpamdWith(t, scannertest.SpamdOptions{MaxChildren: scannertest.SpamdDefaultMaxChildren})
	p := startProxy(t, scannerConfig(clamd.TCPAddr, spamd.Addr, t.TempDir())+"limits:\n  max_connections_per_ip: 100\n")

	clients := make([]*pop3servertest.Client, sessions)
	for s := range clients {
		clients[s] = dialPOP(t, fmt.Sprintf("session-%d", s), p.Addr)
		clients[s].Cmd(fmt.Sprintf("USER user%d%%%s", s/perUser, d.Addr), "+OK*")
		clients[s].Cmd("PASS "+testPass, "+OK*")
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	for s, c := range clients {
		wg.Go(func() {
			<-start
			c.Cmd("RETR 1", "+OK*")
			if got := string(c.Multi()); !strings.Contains(got, "X-Spam-Status: No") || !strings.Contains(got, "X-Virus-Scanned: clean") {
				t.Errorf("session %d: ham not checked by both scanners:\n%s", s, got)
			}
			c.Cmd("RETR 2", "+OK*")
			if got := string(c.Multi()); !strings.Contains(got, "X-Spam-Flag: YES") {
				t.Errorf("session %d: GTUBE not flagged:\n%s", s, got)
			}
			c.Cmd("QUIT", "+OK*")
		})
	}
	close(start)
	wg.Wait()
	if strings.Contains(p.logs.String(), "X-Pop3proxy-Unscanned") || strings.Contains(p.logs.String(), "filter failed") {
		t.Errorf("a filter failed under load:\n%s", p.logs.String())
	}
}
