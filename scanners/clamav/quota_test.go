package clamav_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/pop3proxy/pop3proxy/filter"
	"github.com/pop3proxy/pop3proxy/filter/filtertest"
	"github.com/pop3proxy/pop3proxy/scanners/clamav"
	"github.com/pop3proxy/pop3proxy/yamlconf"
)

func clamBytes(n int) *yamlconf.ByteSize {
	b := yamlconf.ByteSize(n)
	return &b
}

// clamNth is clamOriginal made different, as a hostile upstream pads the
// same virus differently for every RETR.
func clamNth(i int) []byte {
	return fmt.Appendf(nil, "%spadding %03d\r\n", clamOriginal, i)
}

func clamQuarantined(t *testing.T, dir string) (files int, size int64) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if info, err := e.Info(); err == nil && e.Type().IsRegular() {
			files++
			size += info.Size()
		}
	}
	return files, size
}

// TestClamAVQuarantineLimit: quarantine_max_bytes caps what the quarantine
// holds. Below it messages are stored; a message that would pass it is
// stored nowhere and delivered to no one: the error fails closed, and the
// refusal is logged at ERROR level at most once a minute, naming the key.
func TestClamAVQuarantineLimit(t *testing.T) {
	addr := clamInfected(t, "Eicar-Test-Signature")
	size := len(clamNth(0))
	dir := t.TempDir()
	p, logs := clamNew(t, clamav.Filter{Address: addr, QuarantineDir: dir, QuarantineMaxBytes: clamBytes(2 * size)})

	for i := range 2 {
		if v, err := clamJudge(t, p, clamNth(i), 5*time.Second); err != nil || v.Action != filter.Replace {
			t.Fatalf("message %d, below the limit: %v %v", i, v.Action, err)
		}
	}
	if files, used := clamQuarantined(t, dir); files != 2 || used != int64(2*size) {
		t.Fatalf("quarantine holds %d files, %d bytes; want 2, %d", files, used, 2*size)
	}
	// A message already kept costs nothing more.
	if v, err := clamJudge(t, p, clamNth(0), 5*time.Second); err != nil || v.Action != filter.Replace {
		t.Errorf("message kept before, at the limit: %v %v", v.Action, err)
	}
	for i := 2; i < 5; i++ {
		v, err := clamJudge(t, p, clamNth(i), 5*time.Second)
		if err == nil {
			t.Fatalf("message %d over the limit: verdict %v and no error", i, v.Action)
		}
		if !errors.Is(err, filter.ErrFailClosed) || !strings.Contains(err.Error(), "quarantine_max_bytes") {
			t.Errorf("message %d over the limit: error %q does not fail closed naming quarantine_max_bytes", i, err)
		}
	}
	if files, _ := clamQuarantined(t, dir); files != 2 {
		t.Errorf("quarantine holds %d files after refusals, want 2", files)
	}
	full := logs.FilterMessageSnippet("quarantine_max_bytes").All()
	if len(full) != 1 || full[0].Level != zapcore.ErrorLevel {
		t.Fatalf("three refusals within a minute logged %d entries naming quarantine_max_bytes, want one at ERROR: %v", len(full), full)
	}
	if ctx := full[0].ContextMap(); ctx["refused"] != int64(1) || ctx["dir"] != dir {
		t.Errorf("log fields %v, want refused=1 and the directory", ctx)
	}

	// Through the chain, on_error: pass does not deliver it.
	ch := filtertest.MustChain(t, fmt.Sprintf("- {type: clamav, address: %s, on_error: pass, quarantine_dir: %q, quarantine_max_bytes: %d}\n", addr, dir, 2*size))
	res, out := clamRun(t, ch, clamNth(9))
	if res.Outcome != filter.TempFail || res.Message != nil {
		t.Errorf("chain with on_error: pass over the limit: %v %q", res.Outcome, out)
	}

	// Files the administrator removes make room again.
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		os.Remove(filepath.Join(dir, e.Name()))
	}
	if v, err := clamJudge(t, p, clamNth(5), 5*time.Second); err != nil || v.Action != filter.Replace {
		t.Errorf("after the quarantine was emptied: %v %v", v.Action, err)
	}
}

// TestClamAVQuarantineLimitCountsExisting: the regular files in the
// directory when the proxy starts count toward the limit; directories and
// symbolic links do not.
func TestClamAVQuarantineLimitCountsExisting(t *testing.T) {
	addr := clamInfected(t, "Eicar-Test-Signature")
	size := len(clamNth(0))
	for _, tc := range []struct {
		name     string
		existing int // bytes of a regular file already there
		stored   bool
	}{
		{"room left", size, true},
		{"no room left", size + 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "20260101T000000Z-0000000000000000.eml"), make([]byte, tc.existing), 0o600); err != nil {
				t.Fatal(err)
			}
			big := filepath.Join(t.TempDir(), "big")
			if err := os.WriteFile(big, make([]byte, 10*size), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(big, filepath.Join(dir, "link.eml")); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(filepath.Join(dir, "old"), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "old", "x.eml"), make([]byte, 10*size), 0o600); err != nil {
				t.Fatal(err)
			}
			p, _ := clamNew(t, clamav.Filter{Address: addr, QuarantineDir: dir, QuarantineMaxBytes: clamBytes(2 * size)})
			v, err := clamJudge(t, p, clamNth(0), 5*time.Second)
			switch {
			case tc.stored && (err != nil || v.Action != filter.Replace):
				t.Errorf("verdict %v, error %v; want stored and replaced", v.Action, err)
			case !tc.stored && !errors.Is(err, filter.ErrFailClosed):
				t.Errorf("verdict %v, error %v; want a fail-closed error", v.Action, err)
			}
			if files, _ := clamQuarantined(t, dir); (files == 2) != tc.stored {
				t.Errorf("quarantine holds %d regular files, stored=%v", files, tc.stored)
			}
		})
	}
}

func TestClamAVQuarantineLimitConfig(t *testing.T) {
	dir := t.TempDir()
	p, _ := clamNew(t, clamav.Filter{Address: "tcp://127.0.0.1:3310", QuarantineDir: dir})
	if p.QuarantineMaxBytes == nil || *p.QuarantineMaxBytes != 1<<30 {
		t.Errorf("default quarantine_max_bytes %v, want 1GiB", p.QuarantineMaxBytes)
	}
	block := "- {type: clamav, address: tcp://127.0.0.1:3310, quarantine_dir: %q, quarantine_max_bytes: %s}\n"
	if _, err := filtertest.Chain(t, fmt.Sprintf(block, dir, "10MiB")); err != nil {
		t.Errorf("quarantine_max_bytes: 10MiB: %v", err)
	}
	for _, bad := range []string{"0", "0B", "-1", "lots"} {
		if _, err := filtertest.Chain(t, fmt.Sprintf(block, dir, bad)); err == nil || !strings.Contains(err.Error(), "quarantine_max_bytes") {
			t.Errorf("quarantine_max_bytes: %s: error %v", bad, err)
		}
	}
	if _, err := filtertest.Chain(t, fmt.Sprintf(block, dir, "0")); err == nil || !strings.Contains(err.Error(), "quarantine_dir") {
		t.Errorf("quarantine_max_bytes: 0: error %v does not say how to disable the quarantine", err)
	}
}
