package clamav_test

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-message/textproto"
	"go.uber.org/zap/zapcore"

	"github.com/pop3proxy/pop3proxy/filter"
	"github.com/pop3proxy/pop3proxy/scanners/clamav"
)

// TestClamAVNoticeRescan: the notice is scanned before it is delivered;
// when clamd finds something in it, or cannot scan it, the notice
// delivered copies nothing from the original's header, and still names the
// virus and the quarantine file.
func TestClamAVNoticeRescan(t *testing.T) {
	for _, tc := range []struct {
		name   string
		second func(net.Conn) // clamd's answer to the re-scan
	}{
		{"re-scan fails", func(c net.Conn) {}},
		{"re-scan garbage", func(c net.Conn) { io.WriteString(c, "UNKNOWN COMMAND\x00") }},
		{"re-scan finds a virus", func(c net.Conn) { io.WriteString(c, "stream: Other.Virus FOUND\x00") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var n atomic.Int32
			rescanned := make(chan []byte, 1)
			addr := clamFake(t, "tcp", func(c net.Conn) {
				data, _, err := clamReadStream(c)
				if err != nil {
					t.Errorf("fake clamd: %v", err)
					return
				}
				if n.Add(1) == 1 {
					io.WriteString(c, "stream: Win.Test.EICAR_HDB-1 FOUND\x00")
					return
				}
				rescanned <- data
				tc.second(c)
			})
			dir := t.TempDir()
			p, logs := clamNew(t, clamav.Filter{Address: addr, QuarantineDir: dir})
			v, err := clamJudge(t, p, []byte(clamOriginal), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if v.Action != filter.Replace || v.Reason != "virus Win.Test.EICAR_HDB-1" {
				t.Fatalf("verdict %v %q", v.Action, v.Reason)
			}
			var full []byte
			select {
			case full = <-rescanned:
			default:
				t.Fatal("the notice was not re-scanned")
			}
			if !bytes.Contains(full, []byte("mallory@example.com")) || bytes.Contains(full, []byte(clamVirus)) {
				t.Errorf("re-scanned data is not the notice built from the original's fields:\n%s", full)
			}

			notice := string(v.Replacement)
			t.Logf("notice:\n%s", notice)
			for _, bad := range []string{"mallory", "alice@example.net", "carol", "invoice", "virus.1@example.com", "Sun, 22 Nov 2026 10:00:00", clamVirus} {
				if strings.Contains(notice, bad) {
					t.Errorf("minimal notice contains %q of the original", bad)
				}
			}
			files, _ := os.ReadDir(dir)
			if len(files) != 1 {
				t.Fatalf("quarantine holds %d files", len(files))
			}
			for _, want := range []string{"X-Virus-Status: Infected\r\n", "X-Virus-Name: Win.Test.EICAR_HDB-1\r\n",
				"From: pop3proxy virus filter <postmaster@pop3proxy.invalid>\r\n", "Subject: [VIRUS REMOVED]",
				"\r\n    Win.Test.EICAR_HDB-1\r\n", "\r\n    " + files[0].Name() + "\r\n"} {
				if !strings.Contains(notice, want) {
					t.Errorf("minimal notice lacks %q", want)
				}
			}
			br := bufio.NewReader(strings.NewReader(notice))
			if _, err := textproto.ReadHeader(br); err != nil {
				t.Errorf("minimal notice header: %v", err)
			}
			if len(logs.FilterMessageSnippet("minimal notice").FilterLevelExact(zapcore.WarnLevel).All()) != 1 {
				t.Errorf("the minimal notice is not logged once as a warning: %v", logs.All())
			}
		})
	}
}
