package dist

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/internal/testinfra"
)

const (
	unitFile   = "pop3proxy.service"
	plistFile  = "org.pop3proxy.pop3proxy.plist"
	installBin = "/usr/local/bin/pop3proxy"
	// shutdown.drain_timeout's default: stopping must give it this long.
	drainTimeout = 30 * time.Second
	// maxExposure is systemd-analyze security's overall exposure, in
	// tenths, above which the unit fails ("OK" is below 2.0 or so; 1.5
	// here).
	maxExposure = "20"
)

// unit returns the unit file's directives as key → values, in order.
func unit(t *testing.T, b []byte) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: not a directive: %q", unitFile, line)
		}
		out[k] = append(out[k], v)
	}
	return out
}

// verify runs systemd-analyze verify on a unit file in a directory of its
// own, with ExecStart's program replaced by a real pop3proxy binary
// (verify insists that it exists), and returns everything it said: it
// exits 0 after merely warning about an unknown key or a bad value, so
// any output is a finding.
func verify(t *testing.T, analyze, bin string, content []byte) (string, error) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, unitFile)
	if err := os.WriteFile(path, bytes.ReplaceAll(content, []byte(installBin), []byte(bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, analyze, "verify", path).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func buildProxy(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "pop3proxy")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/pop3proxy").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func needSystemdAnalyze(t *testing.T) string {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("systemd is Linux's")
	}
	return testinfra.NeedBinary(t, "systemd-analyze")
}

// The systemd unit passes systemd-analyze verify without a word, its
// exposure (systemd-analyze security) stays at "OK", and it has the
// hardening and the behaviour the README promises.
func TestSystemdUnit(t *testing.T) {
	analyze := needSystemdAnalyze(t)
	content, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	bin := buildProxy(t)
	if out, err := verify(t, analyze, bin, content); err != nil || out != "" {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}

	dir := t.TempDir()
	path := filepath.Join(dir, unitFile)
	os.WriteFile(path, bytes.ReplaceAll(content, []byte(installBin), []byte(bin)), 0o644)
	out, err := exec.Command(analyze, "security", "--offline=yes", "--threshold="+maxExposure, path).CombinedOutput()
	var overall string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "Overall exposure level") {
			overall = strings.TrimSpace(l)
		}
	}
	if err != nil || overall == "" {
		t.Errorf("systemd-analyze security --threshold=%s: %v\n%s", maxExposure, err, out)
	}
	t.Log(overall)

	d := unit(t, content)
	for key, want := range map[string]string{
		"ExecStart":               installBin + " -config /etc/pop3proxy/config.yaml",
		"ExecReload":              "/bin/kill -HUP $MAINPID",
		"Restart":                 "on-failure",
		"DynamicUser":             "yes",
		"AmbientCapabilities":     "CAP_NET_BIND_SERVICE",
		"CapabilityBoundingSet":   "CAP_NET_BIND_SERVICE",
		"NoNewPrivileges":         "yes",
		"ProtectSystem":           "strict",
		"ProtectHome":             "yes",
		"PrivateTmp":              "yes",
		"StateDirectory":          "pop3proxy pop3proxy/quarantine",
		"CacheDirectory":          "pop3proxy",
		"KillMode":                "mixed",
		"SystemCallErrorNumber":   "EPERM",
		"RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
	} {
		if got := d[key]; !slices.Equal(got, []string{want}) {
			t.Errorf("%s=%q, want %q", key, got, want)
		}
	}
	stop, err := time.ParseDuration(strings.Join(d["TimeoutStopSec"], ""))
	if err != nil || stop <= drainTimeout {
		t.Errorf("TimeoutStopSec=%v: must leave the drain its %v", d["TimeoutStopSec"], drainTimeout)
	}
	// The paths the comment tells users to configure are the ones the
	// unit makes writable.
	for _, p := range []string{"spool_dir: /var/cache/pop3proxy", "quarantine_dir: /var/lib/pop3proxy/quarantine"} {
		if !bytes.Contains(content, []byte(p)) {
			t.Errorf("the unit's comment does not say %q", p)
		}
	}
}

// The verify step finds what it is there for: an unknown key, a value
// systemd cannot parse, a program that does not exist.
func TestSystemdVerifyCatchesMistakes(t *testing.T) {
	analyze := needSystemdAnalyze(t)
	content, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	bin := buildProxy(t)
	for name, edit := range map[string][2]string{
		"unknown key":     {"\nProtectSystem=", "\nProtectSystm="},
		"bad value":       {"\nRestart=on-failure", "\nRestart=sometimes"},
		"missing program": {"ExecStart=" + installBin, "ExecStart=/nonexistent/pop3proxy"},
	} {
		if !bytes.Contains(content, []byte(edit[0])) {
			t.Errorf("%s: the unit no longer contains %q; update the test", name, edit[0])
			continue
		}
		out, err := verify(t, analyze, bin, bytes.Replace(content, []byte(edit[0]), []byte(edit[1]), 1))
		if err == nil && out == "" {
			t.Errorf("%s: systemd-analyze verify said nothing about %q", name, edit[1])
		}
	}
}

// The launchd job is a well-formed property list (Python's plistlib is as
// strict as launchd about the format) that starts the installed binary as
// an unprivileged user, restarts it only after a failure and leaves a
// drain its time.
func TestLaunchdPlist(t *testing.T) {
	py := testinfra.NeedBinary(t, "python3")
	out, err := exec.Command(py, "-c", "import json, plistlib, sys; json.dump(plistlib.load(open(sys.argv[1], 'rb')), sys.stdout)", plistFile).CombinedOutput()
	if err != nil {
		t.Fatalf("%s is not a valid property list: %v\n%s", plistFile, err, out)
	}
	var job struct {
		Label             string
		ProgramArguments  []string
		UserName          string
		RunAtLoad         bool
		KeepAlive         map[string]bool
		ExitTimeOut       int
		StandardErrorPath string
	}
	if err := json.Unmarshal(out, &job); err != nil {
		t.Fatal(err)
	}
	if job.Label+".plist" != plistFile {
		t.Errorf("Label %q: launchd wants it to match the file name %s", job.Label, plistFile)
	}
	if len(job.ProgramArguments) != 3 || job.ProgramArguments[0] != installBin || job.ProgramArguments[1] != "-config" || !filepath.IsAbs(job.ProgramArguments[2]) {
		t.Errorf("ProgramArguments %q: want %s -config /absolute/config.yaml", job.ProgramArguments, installBin)
	}
	if job.UserName == "" || job.UserName == "root" {
		t.Errorf("UserName %q: the proxy needs no privilege", job.UserName)
	}
	if !job.RunAtLoad || job.KeepAlive["SuccessfulExit"] {
		t.Errorf("RunAtLoad %v, KeepAlive %v: want started at boot and restarted only after a failure", job.RunAtLoad, job.KeepAlive)
	}
	if time.Duration(job.ExitTimeOut)*time.Second <= drainTimeout {
		t.Errorf("ExitTimeOut %ds: must leave the drain its %v", job.ExitTimeOut, drainTimeout)
	}
	if job.StandardErrorPath == "" {
		t.Error("no StandardErrorPath: the log would be lost")
	}
}
