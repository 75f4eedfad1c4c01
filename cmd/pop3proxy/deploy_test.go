package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/pop3proxy/pop3proxy/cmd/pop3proxy/app"
	"github.com/pop3proxy/pop3proxy/internal/testinfra"
	"github.com/pop3proxy/pop3proxy/scanners/scannertest"
	"github.com/pop3proxy/pop3proxy/upstream/upstreamtest"
)

// The compose stack's files, from this package's directory.
const (
	composeConfig = "../../docker/config.yaml"
	composeFile   = "../../docker/compose.yaml"
)

// TestComposeTopologyNatively runs the stack of docker/compose.yaml
// without containers: clamd and spamd from Debian's packages, and
// pop3proxy with docker/config.yaml as it is, except for what only the
// container decides: the listeners (on free loopback ports), the state
// directories (temporary ones), the allow list (the test's Dovecot) and the
// service names, each replaced by the address of its stand-in. A message
// fetched through the proxy then carries clamd's and spamd's verdicts, a
// virus is replaced and quarantined, spam is flagged; the health check of
// the image (`pop3proxy -probe .../healthz`) passes while the proxy runs and
// fails once it has drained and exited, and spamassassin's compose health
// check passes against the real spamd.
func TestComposeTopologyNatively(t *testing.T) {
	d := upstreamtest.StartDovecot(t, upstreamtest.DovecotOptions{Users: map[string]string{testUser: testPass}})
	clean := []byte("From: a@example.com\r\nTo: alice@example.com\r\nSubject: clean\r\nMessage-ID: <clean@example.com>\r\nDate: Sat, 28 Nov 2026 10:00:00 +0000\r\n\r\nHello.\r\n")
	for _, m := range [][]byte{
		clean,
		[]byte("From: v@example.com\r\nTo: alice@example.com\r\nSubject: inline virus\r\nMessage-ID: <virus@example.com>\r\n\r\n" + string(scannertest.EICAR()) + "\r\n"),
		[]byte("From: s@example.com\r\nTo: alice@example.com\r\nSubject: cheap pills\r\nMessage-ID: <spam@example.com>\r\n\r\n" + string(scannertest.GTUBE()) + "\r\n"),
	} {
		d.Deliver(t, testUser, m)
	}
	clamd, spamd := scannertest.StartClamd(t), scannertest.StartSpamd(t)

	healthAddr := testinfra.FreeAddr(t)
	quarantine, spool := t.TempDir(), t.TempDir()
	config := nativeComposeConfig(t, []string{"listen", "log"}, map[string]string{
		"tcp://clamav:3310":      "tcp://" + clamd.TCPAddr,
		"tcp://spamassassin:783": "tcp://" + spamd.Addr,
		"metrics.listen":         healthAddr,
		"spool_dir":              spool,
		"filters.quarantine_dir": quarantine,
		"upstream.allow":         "127.0.0.1:*",
	})
	p := startProxy(t, config)

	// The image's HEALTHCHECK, natively.
	probe := func(path string) error {
		out, err := exec.Command(proxyBin, "-probe", "http://"+healthAddr+path).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	if err := probe("/healthz"); err != nil {
		t.Errorf("-probe /healthz while serving: %v", err)
	}
	// Both scanners answer: ready (the readiness check runs at start and
	// then every check_interval).
	eventually(t, "/readyz with clamd and spamd up", func() bool { return probe("/readyz") == nil })

	c := loggedIn(t, "client", p, d)
	c.Cmd("RETR 1", "+OK*")
	got := c.Multi()
	if !bytes.HasSuffix(got, clean) {
		t.Errorf("clean message not delivered intact behind added fields:\n%s", got)
	}
	added := string(got[:max(0, len(got)-len(clean))])
	for _, want := range []string{"X-Virus-Scanned:", "X-Spam-Status: No", "X-Scanned-By: pop3proxy"} {
		if !strings.Contains(added, want) {
			t.Errorf("clean message lacks %q (clamd, spamd, header filter):\n%s", want, added)
		}
	}
	c.Cmd("RETR 2", "+OK*")
	if got := c.Multi(); bytes.Contains(got, scannertest.EICAR()) || !bytes.Contains(got, []byte(scannertest.ClamdEICARVirus)) {
		t.Errorf("virus not replaced by a notice naming %s:\n%s", scannertest.ClamdEICARVirus, got)
	}
	if q, _ := filepath.Glob(filepath.Join(quarantine, "*")); len(q) != 1 {
		t.Errorf("quarantine holds %d files, want the infected original", len(q))
	}
	c.Cmd("RETR 3", "+OK*")
	if got := c.Multi(); !bytes.Contains(got, []byte("X-Spam-Flag: YES")) {
		t.Errorf("spam not flagged:\n%s", got)
	}
	c.Cmd("QUIT", "+OK*")

	// spamassassin's health check in compose.yaml, against the real spamd.
	spamc := testinfra.NeedBinary(t, "spamc")
	check := composeHealthcheck(t, "spamassassin")
	_, port, _ := strings.Cut(spamd.Addr, ":")
	i := slices.Index(check, "783")
	if len(check) < 2 || check[0] != "spamc" || i < 0 {
		t.Fatalf("spamassassin's health check %q: want spamc ... 783", check)
	}
	check[0], check[i] = spamc, port
	if out, err := exec.Command(check[0], check[1:]...).CombinedOutput(); err != nil {
		t.Errorf("spamassassin's health check %q against spamd: %v\n%s", check, err, out)
	}

	p.signal(t, syscall.SIGTERM)
	if err := p.waitExit(t, 30*time.Second); err != nil {
		t.Fatalf("pop3proxy exited with %v", err)
	}
	if err := probe("/healthz"); err == nil {
		t.Error("-probe /healthz passed with the proxy gone")
	}
}

// nativeComposeConfig is docker/config.yaml with what the container
// decides replaced. repl maps a key path ("metrics.listen",
// "filters.quarantine_dir": that key in every filter) or a value (a
// service's address) to its replacement; a sequence at a replaced path
// becomes a list of that one value. Every value that names a service
// (tcp://) or a path (/) must be replaced, and every replacement used, so
// that nothing of the container is left and the test follows the file.
// The top-level keys in drop are left out.
func nativeComposeConfig(t *testing.T, drop []string, repl map[string]string) string {
	t.Helper()
	b, err := os.ReadFile(composeConfig)
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	replace := func(path, value string) (string, bool) {
		for _, k := range []string{path, value} {
			if v, ok := repl[k]; ok {
				used[k] = true
				return v, true
			}
		}
		return "", false
	}
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				walk(n.Content[i+1], strings.TrimPrefix(path+"."+n.Content[i].Value, "."))
			}
		case yaml.SequenceNode:
			if v, ok := replace(path, ""); ok {
				*n = yaml.Node{Kind: yaml.SequenceNode, Content: []*yaml.Node{{Kind: yaml.ScalarNode, Value: v}}}
				return
			}
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.ScalarNode:
			if v, ok := replace(path, n.Value); ok {
				n.Value = v
			} else if strings.HasPrefix(n.Value, "tcp://") || strings.HasPrefix(n.Value, "/") {
				t.Fatalf("docker/config.yaml %s: %q has no native stand-in in the test", path, n.Value)
			}
		}
	}
	top := doc.Content[0]
	var kept []*yaml.Node
	for i := 0; i+1 < len(top.Content); i += 2 {
		if !slices.Contains(drop, top.Content[i].Value) {
			kept = append(kept, top.Content[i], top.Content[i+1])
		}
	}
	top.Content = kept
	walk(top, "")
	for k := range repl {
		if !used[k] {
			t.Fatalf("docker/config.yaml has no %s any more; update the test", k)
		}
	}
	out, err := yaml.Marshal(&doc)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// docker/config.yaml is a valid configuration as the container sees it:
// listening on every address without a certificate (tls.require: false),
// with metrics on every address and the allow list it has; only the
// scanners' names and the state directories, which exist only in the
// stack, are replaced.
func TestComposeConfigValid(t *testing.T) {
	config := nativeComposeConfig(t, nil, map[string]string{
		"tcp://clamav:3310":      "tcp://127.0.0.1:3310",
		"tcp://spamassassin:783": "tcp://127.0.0.1:783",
		"spool_dir":              t.TempDir(),
		"filters.quarantine_dir": t.TempDir(),
	})
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := app.LoadConfig(path)
	if err != nil {
		t.Fatalf("docker/config.yaml: %v", err)
	}
	if cfg.Listen != "0.0.0.0:1110" || cfg.Metrics.Listen != "0.0.0.0:9110" {
		t.Errorf("listen %q, metrics.listen %q: not the container's", cfg.Listen, cfg.Metrics.Listen)
	}
}

// composeHealthcheck returns a service's health check command from
// docker/compose.yaml (the exec form after "CMD").
func composeHealthcheck(t *testing.T, service string) []string {
	t.Helper()
	b, err := os.ReadFile(composeFile)
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Healthcheck struct {
				Test []string `yaml:"test"`
			} `yaml:"healthcheck"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &compose); err != nil {
		t.Fatal(err)
	}
	test := compose.Services[service].Healthcheck.Test
	if len(test) < 2 || test[0] != "CMD" {
		t.Fatalf("compose.yaml: %s's health check %q is not in exec form", service, test)
	}
	return test[1:]
}

// -service is for Windows; elsewhere it says which service files to use
// instead, and fails.
func TestServiceFlagOutsideWindows(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("Windows installs the service")
	}
	out, err := exec.Command(proxyBin, "-service", "install").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "dist/pop3proxy.service") {
		t.Errorf("-service install on %s: %v\n%s", runtime.GOOS, err, out)
	}
}
