package clamav_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message/textproto"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/pop3proxy/pop3proxy/filter"
	"github.com/pop3proxy/pop3proxy/filter/filtertest"
	"github.com/pop3proxy/pop3proxy/internal/testinfra"
	"github.com/pop3proxy/pop3proxy/scanners/clamav"
)

// clamFake runs a fake clamd on a loopback TCP port or a unix socket
// until the test ends, calling serve on each connection in a goroutine of
// its own, and returns its address in the form of the address key.
func clamFake(t *testing.T, network string, serve func(c net.Conn)) string {
	t.Helper()
	ln, addr := testinfra.Listen(t, network)
	testinfra.Serve(t, ln, 15*time.Second, serve)
	return addr
}

// clamReadStream reads one INSTREAM request, checks its framing (chunks of
// at most 64 KiB) and returns the data and the chunk sizes.
func clamReadStream(r io.Reader) ([]byte, []int, error) {
	cmd := make([]byte, len("zINSTREAM\x00"))
	if _, err := io.ReadFull(r, cmd); err != nil {
		return nil, nil, fmt.Errorf("read command: %w", err)
	}
	if string(cmd) != "zINSTREAM\x00" {
		return nil, nil, fmt.Errorf("command %q, want zINSTREAM NUL", cmd)
	}
	var data []byte
	var chunks []int
	for {
		var hdr [4]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return nil, nil, fmt.Errorf("read chunk length after %d chunks: %w", len(chunks), err)
		}
		n := binary.BigEndian.Uint32(hdr[:])
		if n == 0 {
			return data, chunks, nil
		}
		if n > 64<<10 {
			return nil, nil, fmt.Errorf("chunk %d announces %d bytes, more than 64 KiB", len(chunks), n)
		}
		chunk := make([]byte, n)
		if _, err := io.ReadFull(r, chunk); err != nil {
			return nil, nil, fmt.Errorf("chunk %d: %d bytes announced: %w", len(chunks), n, err)
		}
		data = append(data, chunk...)
		chunks = append(chunks, int(n))
	}
}

// clamRequest is what a fake clamd received.
type clamRequest struct {
	data   []byte
	chunks []int
	extra  []byte // bytes after the zero-length chunk, before the reply
}

// clamReplying returns a fake that reads a request, checks that nothing
// follows the zero-length chunk, sends it on got (if not nil) and answers
// reply.
func clamReplying(t *testing.T, reply string, got chan<- clamRequest) func(net.Conn) {
	return func(c net.Conn) {
		data, chunks, err := clamReadStream(c)
		if err != nil {
			t.Errorf("fake clamd: %v", err)
			return
		}
		req := clamRequest{data: data, chunks: chunks}
		// The client must now wait for the reply and send nothing.
		c.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
		req.extra, _ = io.ReadAll(c)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if got != nil {
			got <- req
		}
		io.WriteString(c, reply)
	}
}

// clamNew provisions a ClamAV filter with cfg and a logger whose entries
// the test can inspect.
func clamNew(t *testing.T, cfg clamav.Filter) (*clamav.Filter, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	p := &cfg
	if err := p.Provision(filter.Env{Name: "clamav", Logger: zap.New(core)}); err != nil {
		t.Fatalf("Provision: %v", err)
	}
	return p, logs
}

var clamMeta = filter.Meta{User: "alice", Upstream: "pop.example.net:995", Number: 3}

// clamRun passes msg through ch and returns the result, closed when the
// test ends, and the delivered bytes (nil without a message).
func clamRun(t *testing.T, ch *filter.Chain, msg []byte) (*filter.Result, []byte) {
	t.Helper()
	return clamRunMessage(t, ch, filter.NewMessage(msg, clamMeta))
}

func clamRunMessage(t *testing.T, ch *filter.Chain, m *filter.Message) (*filter.Result, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res := ch.Run(ctx, m)
	t.Cleanup(func() { res.Close() })
	if res.Message == nil {
		return res, nil
	}
	out, err := res.Message.Bytes()
	if err != nil {
		t.Fatalf("reading the delivered message: %v", err)
	}
	return res, out
}

func clamJudge(t *testing.T, p *clamav.Filter, msg []byte, timeout time.Duration) (filter.Verdict, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return p.Judge(ctx, filter.NewMessage(msg, clamMeta))
}

// clamOriginal is an "infected" message for the fakes, which only say
// FOUND; its header has every field a notice keeps, folded, and forged
// X-Virus-* fields.
const clamOriginal = "Received: from mx.example.com by pop.example.net; Sun, 22 Nov 2026 10:00:00 +0000\r\n" +
	"From: \"Mallory\" <mallory@example.com>\r\n" +
	"To: alice@example.net,\r\n bob@example.net\r\n" +
	"Cc: carol@example.net\r\n" +
	"Date: Sun, 22 Nov 2026 10:00:00 +0000\r\n" +
	"Subject: your\r\n\tinvoice\r\n" +
	"Message-ID: <virus.1@example.com>\r\n" +
	"X-Virus-Scanned: clean (forged)\r\n" +
	"X-Virus-Status: Clean\r\n" +
	"X-Virus-Name: none\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: text/plain\r\n" +
	"\r\n" +
	"PAYLOAD-THAT-MUST-NOT-BE-DELIVERED\r\n"

func TestClamAVProvisionErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cfg  clamav.Filter
		want string
	}{
		{"no address", clamav.Filter{}, "address is required"},
		{"bare path", clamav.Filter{Address: "/run/clamav/clamd.ctl"}, "no scheme"},
		{"relative unix", clamav.Filter{Address: "unix://run/clamav/clamd.ctl"}, "three slashes"},
		{"tcp without port", clamav.Filter{Address: "tcp://127.0.0.1"}, "port"},
		{"bad port", clamav.Filter{Address: "tcp://127.0.0.1:99999"}, "65535"},
		{"http", clamav.Filter{Address: "http://127.0.0.1:3310"}, "not supported"},
		{"action", clamav.Filter{Address: "tcp://127.0.0.1:3310", Action: "delete"}, `action "delete" is not one of replace, reject, tag`},
		{"missing quarantine", clamav.Filter{Address: "tcp://127.0.0.1:3310", QuarantineDir: filepath.Join(t.TempDir(), "nope")}, "does not create it"},
		{"relative quarantine", clamav.Filter{Address: "tcp://127.0.0.1:3310", QuarantineDir: "quarantine"}, "absolute"},
		{"file quarantine", clamav.Filter{Address: "tcp://127.0.0.1:3310", QuarantineDir: file}, "not a directory"},
		{"all at once", clamav.Filter{Address: "tcp://x", Action: "x", QuarantineDir: "q"}, "; action"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.cfg
			err := p.Provision(filter.Env{Name: "clamav", Logger: zap.NewNop()})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Provision = %v, want an error containing %q", err, tc.want)
			}
		})
	}
	t.Run("read-only quarantine", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("root writes into read-only directories")
		}
		dir := t.TempDir()
		os.Chmod(dir, 0o500)
		defer os.Chmod(dir, 0o700)
		p := clamav.Filter{Address: "tcp://127.0.0.1:3310", QuarantineDir: dir}
		if err := p.Provision(filter.Env{Logger: zap.NewNop()}); err == nil || !strings.Contains(err.Error(), "not writable") {
			t.Errorf("Provision = %v, want not writable", err)
		}
	})
	t.Run("defaults", func(t *testing.T) {
		dir := t.TempDir()
		p, _ := clamNew(t, clamav.Filter{Address: "unix:///run/clamav/clamd.ctl", QuarantineDir: dir})
		if p.Action != clamav.ActionReplace || p.MaxStreamSize != 25<<20 {
			t.Errorf("defaults: action %q, max_stream %d", p.Action, p.MaxStreamSize)
		}
		if limit, key := p.MaxStream(); limit != 25<<20 || key != "max_stream" {
			t.Errorf("MaxStream() = %d, %q; want 25MiB, max_stream", limit, key)
		}
		if left, _ := os.ReadDir(dir); len(left) != 0 {
			t.Errorf("the writability probe left %v", left)
		}
	})
}

// TestClamAVConfig: the keys of config.yaml.example decode into the plugin
// through the chain, and a misspelt key is refused.
func TestClamAVConfig(t *testing.T) {
	addr := clamFake(t, "tcp", clamReplying(t, "stream: OK\x00", nil))
	build := func(block string) (*filter.Chain, error) {
		return filtertest.Chain(t, block)
	}
	ch, err := build(fmt.Sprintf(`
- type: clamav
  address: %s
  timeout: 30s
  on_error: tempfail
  action: replace
  quarantine_dir: ""
  max_stream: 10MiB
`, addr))
	if err != nil {
		t.Fatal(err)
	}
	res, out := clamRun(t, ch, []byte("Subject: hi\r\n\r\nhello\r\n"))
	if res.Outcome != filter.Deliver || !bytes.HasPrefix(out, []byte("X-Virus-Scanned: clean (ClamAV via pop3proxy)\r\nSubject: hi\r\n")) {
		t.Errorf("clean message through the chain: %v %q", res.Outcome, out)
	}
	if _, err := build("- type: clamav\n  address: tcp://127.0.0.1:3310\n  adress: x\n"); err == nil || !strings.Contains(err.Error(), "adress") {
		t.Errorf("misspelt key: %v", err)
	}
	if _, err := build("- type: clamav\n  address: tcp://127.0.0.1\n"); err == nil || !strings.Contains(err.Error(), "filters[0]") {
		t.Errorf("bad address through the chain: %v", err)
	}
}

func TestClamAVClean(t *testing.T) {
	addr := clamFake(t, "tcp", clamReplying(t, "stream: OK\x00", nil))
	p, _ := clamNew(t, clamav.Filter{Address: addr})
	v, err := clamJudge(t, p, []byte(clamOriginal), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	want := []filter.Edit{
		filter.Remove("X-Virus-Scanned"), filter.Remove("X-Virus-Status"), filter.Remove("X-Virus-Name"),
		filter.Add("X-Virus-Scanned", "clean (ClamAV via pop3proxy)"),
	}
	if v.Action != filter.Continue || fmt.Sprint(v.Edits) != fmt.Sprint(want) || v.Replacement != nil {
		t.Errorf("verdict %+v, want Continue with %v", v, want)
	}
}

// clamVirus is what clamInfected's fake takes for a virus: the body of
// clamOriginal.
const clamVirus = "PAYLOAD-THAT-MUST-NOT-BE-DELIVERED"

// clamInfected is a fake clamd that finds the virus name in every stream
// holding clamVirus, and answers OK to others (a notice that is re-scanned).
func clamInfected(t *testing.T, name string) string {
	return clamFake(t, "tcp", func(c net.Conn) {
		data, _, err := clamReadStream(c)
		if err != nil {
			t.Errorf("fake clamd: %v", err)
			return
		}
		if bytes.Contains(data, []byte(clamVirus)) {
			io.WriteString(c, "stream: "+name+" FOUND\x00")
			return
		}
		io.WriteString(c, "stream: OK\x00")
	})
}

func TestClamAVReplace(t *testing.T) {
	addr := clamInfected(t, "Win.Test.EICAR_HDB-1")
	for _, quarantine := range []bool{false, true} {
		t.Run(fmt.Sprint("quarantine=", quarantine), func(t *testing.T) {
			cfg := clamav.Filter{Address: addr}
			if quarantine {
				cfg.QuarantineDir = t.TempDir()
			}
			p, _ := clamNew(t, cfg)
			v, err := clamJudge(t, p, []byte(clamOriginal), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if v.Action != filter.Replace || v.Reason != "virus Win.Test.EICAR_HDB-1" || len(v.Edits) != 0 {
				t.Fatalf("verdict %v %q %v", v.Action, v.Reason, v.Edits)
			}
			n := string(v.Replacement)
			for _, want := range []string{
				"X-Virus-Status: Infected\r\n", "X-Virus-Name: Win.Test.EICAR_HDB-1\r\n",
				"From: \"Mallory\" <mallory@example.com>\r\n", "To: alice@example.net,\r\n bob@example.net\r\n",
				"Cc: carol@example.net\r\n", "Date: Sun, 22 Nov 2026 10:00:00 +0000\r\n",
				"Subject: [VIRUS REMOVED] your\r\n\tinvoice\r\n", "Message-ID: <virus.1@example.com>\r\n",
				"Content-Type: text/plain; charset=utf-8\r\n", "\r\n    Win.Test.EICAR_HDB-1\r\n",
			} {
				if !strings.Contains(n, want) {
					t.Errorf("notice lacks %q:\n%s", want, n)
				}
			}
			for _, bad := range []string{"PAYLOAD", "forged", "X-Virus-Status: Clean", "Received:", "Content-Type: text/plain\r\n"} {
				if strings.Contains(n, bad) {
					t.Errorf("notice contains %q of the original:\n%s", bad, n)
				}
			}
			files, _ := os.ReadDir(cfg.QuarantineDir)
			switch {
			case quarantine && len(files) != 1:
				t.Fatalf("quarantine holds %d files, want 1", len(files))
			case quarantine:
				if !strings.Contains(n, "\r\n    "+files[0].Name()+"\r\n") || strings.Contains(n, cfg.QuarantineDir) {
					t.Errorf("notice does not name the quarantine file %s alone:\n%s", files[0].Name(), n)
				}
			case !strings.Contains(n, "The original message was not kept."):
				t.Errorf("notice does not say the original was not kept:\n%s", n)
			}
		})
	}
}

func TestClamAVReject(t *testing.T) {
	dir := t.TempDir()
	p, _ := clamNew(t, clamav.Filter{Address: clamInfected(t, "Eicar-Test-Signature"), Action: "reject", QuarantineDir: dir})
	v, err := clamJudge(t, p, []byte(clamOriginal), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if v.Action != filter.Reject || v.Reason != "virus Eicar-Test-Signature" || v.Replacement != nil || len(v.Edits) != 0 {
		t.Errorf("verdict %+v", v)
	}
	// The client retries a rejected message at every poll: one copy.
	if _, err := clamJudge(t, p, []byte(clamOriginal), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if files, _ := os.ReadDir(dir); len(files) != 1 {
		t.Errorf("quarantine holds %d files after two rejections of one message, want 1", len(files))
	}
}

func TestClamAVTag(t *testing.T) {
	dir := t.TempDir()
	p, _ := clamNew(t, clamav.Filter{Address: clamInfected(t, "Eicar-Test-Signature"), Action: "tag", QuarantineDir: dir})
	v, err := clamJudge(t, p, []byte(clamOriginal), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	want := []filter.Edit{
		filter.Remove("X-Virus-Scanned"), filter.Remove("X-Virus-Status"), filter.Remove("X-Virus-Name"),
		filter.Add("X-Virus-Status", "Infected"), filter.Add("X-Virus-Name", "Eicar-Test-Signature"),
	}
	if v.Action != filter.Continue || v.Reason != "virus Eicar-Test-Signature" || fmt.Sprint(v.Edits) != fmt.Sprint(want) {
		t.Errorf("verdict %+v, want Continue with %v", v, want)
	}
	// Tagged mail is delivered: nothing to keep.
	if files, _ := os.ReadDir(dir); len(files) != 0 {
		t.Errorf("tag quarantined %d files", len(files))
	}
}

func TestClamAVQuarantine(t *testing.T) {
	dir := t.TempDir()
	p, _ := clamNew(t, clamav.Filter{Address: clamInfected(t, "Eicar-Test-Signature"), QuarantineDir: dir})
	orig := []byte(clamOriginal)
	before := time.Now().UTC().Truncate(time.Second)
	if _, err := clamJudge(t, p, orig, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	files, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 1 {
		t.Fatalf("quarantine holds %v, want one file and no temporary files", files)
	}
	name := files[0].Name()
	sum := sha256.Sum256(orig)
	m := regexp.MustCompile(`^(\d{8}T\d{6}Z)-([0-9a-f]{16})\.eml$`).FindStringSubmatch(name)
	if m == nil || m[2] != hex.EncodeToString(sum[:8]) {
		t.Fatalf("quarantine file %q is not <UTC time>-<sha256 prefix>.eml", name)
	}
	if at, err := time.Parse("20060102T150405Z", m[1]); err != nil || at.Before(before) || at.After(time.Now().UTC()) {
		t.Errorf("quarantine file time %s is not the time of the scan (%v)", m[1], err)
	}
	got, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil || !bytes.Equal(got, orig) {
		t.Errorf("quarantine file holds %q, want the original bytes (%v)", got, err)
	}
	if st, err := os.Stat(filepath.Join(dir, name)); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("quarantine file mode %v (%v), want 0600", st.Mode().Perm(), err)
	}

	// Another message gets a file of its own.
	other := append([]byte(clamOriginal), "another\r\n"...)
	if _, err := clamJudge(t, p, other, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if files, _ := os.ReadDir(dir); len(files) != 2 {
		t.Errorf("quarantine holds %d files after two different messages, want 2", len(files))
	}
}

// TestClamAVQuarantineFailure: a quarantine that fails is an error, so that
// on_error decides; a notice claiming a copy that does not exist is never
// delivered.
func TestClamAVQuarantineFailure(t *testing.T) {
	addr := clamInfected(t, "Eicar-Test-Signature")
	for _, action := range []string{"replace", "reject"} {
		t.Run(action, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "q")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			p, _ := clamNew(t, clamav.Filter{Address: addr, Action: action, QuarantineDir: dir})
			if err := os.Remove(dir); err != nil {
				t.Fatal(err)
			}
			v, err := clamJudge(t, p, []byte(clamOriginal), 5*time.Second)
			if err == nil {
				t.Fatalf("quarantine into a removed directory gave verdict %v %q and no error", v.Action, v.Reason)
			}
			if !strings.Contains(err.Error(), "Eicar-Test-Signature") || !strings.Contains(err.Error(), "quarantine") {
				t.Errorf("error %q does not name the virus and the quarantine", err)
			}
			// A known virus must not pass even with on_error: pass.
			if !errors.Is(err, filter.ErrFailClosed) {
				t.Errorf("error %q does not fail closed", err)
			}
		})
	}
}

// TestClamAVHeaderInjection: a virus name comes from clamd; it must not be
// able to add header fields or lines to the notice.
func TestClamAVHeaderInjection(t *testing.T) {
	evil := clamFake(t, "tcp", clamReplying(t, "stream: Evil\rBcc: victim@example.com\r\tX: \x01\xff FOUND\x00", nil))
	for _, action := range []string{"replace", "tag"} {
		p, _ := clamNew(t, clamav.Filter{Address: evil, Action: action})
		v, err := clamJudge(t, p, []byte(clamOriginal), 5*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", action, err)
		}
		if strings.ContainsAny(v.Reason, "\r\n\x00\x01\xff") {
			t.Errorf("%s: reason %q", action, v.Reason)
		}
		for _, e := range v.Edits {
			if strings.ContainsAny(e.Value, "\r\n\x00\x01\xff") {
				t.Errorf("%s: edit value %q", action, e.Value)
			}
		}
		if action != "replace" {
			continue
		}
		br := bufio.NewReader(bytes.NewReader(v.Replacement))
		h, err := textproto.ReadHeader(br)
		if err != nil {
			t.Fatalf("notice header: %v", err)
		}
		if h.Has("Bcc") || h.Has("X") {
			t.Errorf("virus name injected header fields:\n%s", v.Replacement)
		}
		if got := h.Values("X-Virus-Name"); len(got) != 1 || got[0] != "Evil?Bcc: victim@example.com??X: ??" {
			t.Errorf("X-Virus-Name = %q", got)
		}
		for i, c := range v.Replacement {
			if c == '\r' && (i+1 == len(v.Replacement) || v.Replacement[i+1] != '\n') {
				t.Fatalf("bare CR from the virus name in the notice:\n%q", v.Replacement)
			}
		}
	}
	// An LF ends clamd's reply, so a name with one is a reply cut short:
	// an error, not a verdict.
	lf := clamFake(t, "tcp", clamReplying(t, "stream: Evil\nBcc: victim@example.com FOUND\x00", nil))
	p, _ := clamNew(t, clamav.Filter{Address: lf})
	if v, err := clamJudge(t, p, []byte(clamOriginal), 5*time.Second); err == nil {
		t.Errorf("reply with LF in the name gave verdict %v %q", v.Action, v.Reason)
	}
}

// TestClamAVLogsHits: every hit is logged with the virus, message number,
// user and upstream.
func TestClamAVLogsHits(t *testing.T) {
	p, logs := clamNew(t, clamav.Filter{Address: clamInfected(t, "Eicar-Test-Signature"), Action: "reject"})
	if _, err := clamJudge(t, p, []byte(clamOriginal), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	hits := logs.FilterMessage("virus found").All()
	if len(hits) != 1 || hits[0].Level < zapcore.InfoLevel {
		t.Fatalf("log entries %v, want one \"virus found\" at Info or above", logs.All())
	}
	ctx := hits[0].ContextMap()
	for k, v := range map[string]any{"virus": "Eicar-Test-Signature", "msg": int64(3), "user": "alice", "upstream": "pop.example.net:995", "action": "reject"} {
		if ctx[k] != v {
			t.Errorf("log field %s = %v (%T), want %v", k, ctx[k], ctx[k], v)
		}
	}
}

// TestClamAVChain: through the chain, tag's edits replace forged fields and
// keep the rest of the message byte for byte; replace delivers the notice.
func TestClamAVChain(t *testing.T) {
	addr := clamInfected(t, "Eicar-Test-Signature")
	run := func(action string) (*filter.Result, []byte) {
		block := fmt.Sprintf("- type: clamav\n  address: %s\n  action: %s\n  timeout: 5s\n", addr, action)
		ch := filtertest.MustChain(t, block)
		return clamRun(t, ch, []byte(clamOriginal))
	}
	res, out := run("tag")
	want := "X-Virus-Status: Infected\r\nX-Virus-Name: Eicar-Test-Signature\r\n" +
		strings.NewReplacer("X-Virus-Scanned: clean (forged)\r\n", "", "X-Virus-Status: Clean\r\n", "", "X-Virus-Name: none\r\n", "").Replace(clamOriginal)
	if res.Outcome != filter.Deliver || string(out) != want {
		t.Errorf("tag: %v\n%s\nwant\n%s", res.Outcome, out, want)
	}
	if res, out = run("replace"); res.Outcome != filter.Deliver || !bytes.HasPrefix(out, []byte("X-Virus-Status: Infected\r\n")) || bytes.Contains(out, []byte("PAYLOAD")) {
		t.Errorf("replace: %v\n%s", res.Outcome, out)
	}
	if res, _ = run("reject"); res.Outcome != filter.Refuse || res.Reason != "virus Eicar-Test-Signature" {
		t.Errorf("reject: %v %q", res.Outcome, res.Reason)
	}
}

// clamAssertError checks that Judge failed with an error, never a verdict.
func clamAssertError(t *testing.T, v filter.Verdict, err error, contains string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got verdict %v %q %v and no error", v.Action, v.Reason, v.Edits)
	}
	if contains != "" && !strings.Contains(err.Error(), contains) {
		t.Errorf("error %q does not contain %q", err, contains)
	}
}
