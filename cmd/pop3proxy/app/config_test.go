package app

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/internal/testinfra"
	"github.com/pop3proxy/pop3proxy/yamlconf"
)

func TestParseConfigDefaults(t *testing.T) {
	cfg, err := ParseConfig([]byte("listen: 127.0.0.1:1110\n"))
	if err != nil {
		t.Fatalf("ParseConfig = %v", err)
	}
	if cfg.MaxSize != 10<<20 {
		t.Errorf("MaxSize = %d, want 10 MiB", cfg.MaxSize)
	}
	if cfg.Upstream.TLS != "auto" || cfg.Upstream.DialTimeout.D() != 10*time.Second || cfg.Upstream.Timeout.D() != time.Minute || cfg.Upstream.Keepalive.D() != 45*time.Second {
		t.Errorf("upstream defaults = %+v", cfg.Upstream)
	}
	if cfg.Limits.IdleTimeout.D() != 10*time.Minute {
		t.Errorf("idle timeout default = %v, want 10m", cfg.Limits.IdleTimeout.D())
	}
	if got := strings.Join(cfg.Shutdown.AllowFrom, ","); got != "127.0.0.0/8,::1/128" {
		t.Errorf("shutdown.allow_from default = %s", got)
	}
}

func TestParseConfigFull(t *testing.T) {
	cfg, err := ParseConfig([]byte(`
listen: "127.0.0.1:2110"
max_size: 512KiB
upstream:
  default: "pop.example.com:110"
  allow: ["*:110", "*.example.com:995"]
  separators: "%"
  tls: implicit
  dial_timeout: 3s
  timeout: 45s
  keepalive: 20s
filters: []
shutdown:
  allow_from: ["10.1.2.3", "192.168.0.0/16"]
  drain_timeout: 1m
limits:
  max_line_length: 1024
  idle_timeout: 15m
log:
  level: debug
  format: json
`))
	if err != nil {
		t.Fatalf("ParseConfig = %v", err)
	}
	if cfg.MaxSize != 512<<10 || cfg.Upstream.Default != "pop.example.com:110" || cfg.Upstream.TLS != "implicit" ||
		cfg.Upstream.Timeout.D() != 45*time.Second || cfg.Upstream.Keepalive.D() != 20*time.Second || cfg.Limits.MaxLineLength != 1024 || cfg.Log.Format != "json" ||
		len(cfg.Shutdown.AllowFrom) != 2 || cfg.Shutdown.DrainTimeout.D() != time.Minute {
		t.Errorf("decoded config = %+v", cfg)
	}
}

// Every problem is reported at once, each with its key path.
func TestParseConfigReportsEveryProblem(t *testing.T) {
	_, err := ParseConfig([]byte(`
listen: "0.0.0.0:1110"
max_size: 10 parsecs
upstream:
  tls: sometimes
  dial_timeout: soon
  keepalive: -1s
  allow: []
  colour: blue
shutdown:
  allow_from: ["not-a-net"]
limits:
  idle_timeout: 1m
  max_line_length: 100
log:
  level: loud
bogus: 1
`))
	if err == nil {
		t.Fatal("ParseConfig accepted a broken config")
	}
	msg := err.Error()
	for _, want := range []string{
		"max_size", "upstream.tls", "upstream.dial_timeout", `upstream.keepalive: invalid duration "-1s"`, "upstream.colour: unknown key",
		"shutdown.allow_from[0]", "limits.idle_timeout", "limits.max_line_length", "log.level",
		"bogus: unknown key", "upstream.allow: must be set because listen accepts remote clients",
		"tls.require: listen accepts remote clients",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error does not mention %q:\n%s", want, msg)
		}
	}
	if !strings.Contains(msg, "line 3") {
		t.Errorf("error does not give line numbers:\n%s", msg)
	}
}

func TestOpenRelayRefused(t *testing.T) {
	for _, tc := range []struct {
		listen, allow string
		ok            bool
	}{
		{"127.0.0.1:1110", "", true},
		{"[::1]:1110", "", true},
		{"localhost:1110", "", true},
		{"0.0.0.0:1110", "", false},
		{":1110", "", false},
		{"192.0.2.10:1110", "", false},
		{"0.0.0.0:1110", `["pop.example.com:995"]`, true},
	} {
		// Plaintext passwords are allowed explicitly, so that only the
		// allow list decides.
		doc := "listen: \"" + tc.listen + "\"\ntls:\n  require: false\n"
		if tc.allow != "" {
			doc += "upstream:\n  allow: " + tc.allow + "\n"
		}
		_, err := ParseConfig([]byte(doc))
		if (err == nil) != tc.ok || (err != nil && !strings.Contains(err.Error(), "upstream.allow: must be set")) {
			t.Errorf("listen %s allow %q: err = %v, want ok=%v", tc.listen, tc.allow, err, tc.ok)
		}
	}
}

func TestParseByteSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want yamlconf.ByteSize
		ok   bool
	}{
		{"1024", 1024, true},
		{"10MiB", 10 << 20, true},
		{"10MB", 10_000_000, true},
		{"10M", 10 << 20, true},
		{"512 KiB", 512 << 10, true},
		{"2gib", 2 << 30, true},
		{"7B", 7, true},
		{"-1", 0, false},
		{"ten", 0, false},
		{"10XB", 0, false},
		{"99999999999GiB", 0, false},
	} {
		got, err := yamlconf.ParseByteSize(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestDefaultUpstreamMustBeAllowed(t *testing.T) {
	_, err := ParseConfig([]byte("upstream:\n  default: \"pop.example.com:110\"\n  allow: [\"*:995\"]\n"))
	if err == nil || !strings.Contains(err.Error(), "upstream.default") {
		t.Fatalf("err = %v, want a complaint about upstream.default", err)
	}
}

func TestCAFileMustHoldCertificates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := ParseConfig([]byte("upstream:\n  ca_file: " + path + "\n"))
	if err == nil || !strings.Contains(err.Error(), "upstream.ca_file") {
		t.Fatalf("err = %v, want a complaint about upstream.ca_file", err)
	}
}

// The shipped example must always be a valid configuration.
func TestExampleConfigIsValid(t *testing.T) {
	if _, err := LoadConfig("../../../config.yaml.example"); err != nil {
		t.Fatal(err)
	}
}

// config.yaml.example says its values are the defaults unless marked
// "example": the marked keys are upstream.allow and the header filter.
func TestExampleConfigIsDefaults(t *testing.T) {
	cfg, err := LoadConfig("../../../config.yaml.example")
	if err != nil {
		t.Fatal(err)
	}
	def := DefaultConfig()
	if len(cfg.Filters) == 0 || len(cfg.Upstream.Allow) == 0 {
		t.Fatal("the example's filter and allow list are gone; update this test")
	}
	cfg.Upstream.Allow, cfg.Filters = def.Upstream.Allow, def.Filters
	if diff := changedKeys(&def, cfg); len(diff) > 0 {
		t.Errorf("config.yaml.example differs from the defaults in %v without saying \"example\"", diff)
	}
}

func TestTLSAndListenerKeys(t *testing.T) {
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"tls listener without cert", "listen_tls: \"127.0.0.1:1995\"\n", "listen_tls: needs tls.cert"},
		{"require without cert", "tls:\n  require: true\n", "tls.require: needs tls.cert"},
		{"cert without key", "tls:\n  cert: /x.pem\n", "tls: cert and key go together"},
		{"unreadable cert", "tls:\n  cert: /nonexistent.pem\n  key: /nonexistent.key\n", "tls.cert:"},
		{"proxy listener untrusted", "listen_proxy: \"127.0.0.1:1111\"\nproxy_protocol:\n  trusted: []\n", "proxy_protocol.trusted: must list"},
		{"bad trusted", "proxy_protocol:\n  trusted: [\"nowhere\"]\n", "proxy_protocol.trusted[0]"},
		{"public proxy listener is a listener", "listen_proxy: \"0.0.0.0:1111\"\n", "upstream.allow: must be set"},
		{"no listener", "listen: \"\"\n", "no listener"},
		{"allow_private", "upstream:\n  allow_private: maybe\n", "upstream.allow_private"},
		{"destination match", "upstream:\n  destinations:\n    - tls: none\n", "upstream.destinations[0].match: is required"},
		{"destination tls", "upstream:\n  destinations:\n    - {match: \"*:110\", tls: sometimes}\n", "upstream.destinations[0].tls"},
		{"limits", "limits:\n  max_connections: 0\n  max_failed_login_delay: 1ms\n", "limits.max_connections: must be at least 1"},
		{"private default refused", "listen: \"0.0.0.0:110\"\nupstream:\n  default: \"10.0.0.5:110\"\n  allow: [\"*:110\"]\n", "upstream.default: 10.0.0.5 is a private"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

// A PROXY listener serves a load balancer's remote clients wherever it
// listens, so it never makes the proxy "local only": not for the open-relay
// refusal, not for allow_private: auto, not for tls.require: auto.
func TestProxyListenerIsNeverLocal(t *testing.T) {
	for _, key := range []string{"listen_proxy", "listen_proxy_tls"} {
		t.Run(key, func(t *testing.T) {
			doc := "listen: \"\"\n" + key + ": \"127.0.0.1:1111\"\n"
			if key == "listen_proxy_tls" {
				pki := testinfra.NewPKI(t, "pop3proxy")
				doc += "tls: {cert: " + pki.Cert + ", key: " + pki.Key + "}\n"
			}
			_, err := ParseConfig([]byte(doc))
			if err == nil || !strings.Contains(err.Error(), "upstream.allow: must be set because "+key+" accepts remote clients") {
				t.Fatalf("err = %v, want upstream.allow required", err)
			}
			cfg, err := ParseConfig([]byte(doc + "upstream:\n  allow: [\"pop.example.com:110\"]\ntls:\n  require: false\n"))
			if key == "listen_proxy_tls" {
				// tls.require: false is fine with a certificate too.
				cfg, err = ParseConfig([]byte(strings.Replace(doc, "}\n", ", require: false}\n", 1) + "upstream:\n  allow: [\"pop.example.com:110\"]\n"))
			}
			if err != nil {
				t.Fatal(err)
			}
			if !cfg.denyPrivate() {
				t.Error("allow_private: auto allows private destinations behind a PROXY listener")
			}
		})
	}
}

// Dovecot's default: passwords from remote clients only under TLS. With a
// certificate that is what auto means; without one, a listener remote
// clients can reach must say tls.require: false explicitly.
func TestTLSRequireAuto(t *testing.T) {
	pki := testinfra.NewPKI(t, "pop3proxy")
	withCert := "tls:\n  cert: " + pki.Cert + "\n  key: " + pki.Key + "\n"
	public := "listen: \"0.0.0.0:1110\"\nupstream:\n  allow: [\"pop.example.com:110\"]\n"
	for _, tc := range []struct {
		name, doc string
		err       string // "" for a valid configuration
		require   bool
	}{
		{"local, no certificate", "listen: \"127.0.0.1:1110\"\n", "", false},
		{"local, certificate", "listen: \"127.0.0.1:1110\"\n" + withCert, "", true},
		{"remote, certificate", public + withCert, "", true},
		{"remote, no certificate", public, "tls.require: listen accepts remote clients, but without tls.cert and tls.key", false},
		{"remote, no certificate, explicit false", public + "tls:\n  require: false\n", "", false},
		{"remote, certificate, explicit false", public + withCert + "  require: false\n", "", false},
		{"bad value", "tls:\n  require: sometimes\n", `tls.require: "sometimes" is not one of auto, true, false`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := ParseConfig([]byte(tc.doc))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want it to mention %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.TLS.requireTLS(); got != tc.require {
				t.Errorf("requireTLS = %v, want %v", got, tc.require)
			}
		})
	}
}

// -check reports an allow entry no login could use because allow_private
// refuses its address, instead of "configuration ok" and then refusing
// every login.
func TestPrivateAllowEntriesReported(t *testing.T) {
	base := "listen: \"0.0.0.0:110\"\ntls:\n  require: false\nupstream:\n  allow: "
	for _, tc := range []struct {
		allow string
		want  []string // problems; none for a valid configuration
	}{
		{`["127.0.0.1:21110"]`, []string{"upstream.allow[0]: 127.0.0.1:21110 names only loopback addresses"}},
		{`["[::1]:110", "pop.example.com:110"]`, []string{"upstream.allow[0]: [::1]:110 names only loopback addresses"}},
		{`["10.0.0.0/8:110", "192.168.1.0/24:*"]`, []string{"upstream.allow[0]: 10.0.0.0/8:110 names only private", "upstream.allow[1]"}},
		{`["pop.example.com:110", "*:995", "192.0.2.*:110"]`, nil},
		{`["8.8.8.8:110", "0.0.0.0/0:110"]`, nil},
	} {
		t.Run(tc.allow, func(t *testing.T) {
			_, err := ParseConfig([]byte(base + tc.allow + "\n"))
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("configuration accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err = %v, want it to mention %q", err, w)
				}
			}
			if !strings.Contains(err.Error(), "allow_private: auto, and listen accepts remote clients") {
				t.Errorf("err = %v, want it to say why allow_private refuses", err)
			}
		})
	}
	if _, err := ParseConfig([]byte(base + `["127.0.0.1:21110"]` + "\n  allow_private: true\n")); err != nil {
		t.Errorf("allow_private: true: %v", err)
	}
}

// TestMaxSizeAboveMaxStream checks that -check refuses a max_size that a
// clamav filter cannot scan, naming both keys, since such messages would
// be neither streamed as oversize nor ever scanned.
func TestMaxSizeAboveMaxStream(t *testing.T) {
	doc := "max_size: %s\nfilters:\n  - type: clamav\n    address: tcp://127.0.0.1:3310\n    max_stream: 5MiB\n"
	_, err := ParseConfig([]byte(fmt.Sprintf(doc, "10MiB")))
	if err == nil || !strings.Contains(err.Error(), "filters[0].max_stream") || !strings.Contains(err.Error(), "max_size") {
		t.Fatalf("err = %v, want filters[0].max_stream named with max_size", err)
	}
	if _, err := ParseConfig([]byte(fmt.Sprintf(doc, "5MiB"))); err != nil {
		t.Fatalf("max_size equal to max_stream: %v", err)
	}
}

func TestOversizeAndSpoolKeys(t *testing.T) {
	cfg, err := ParseConfig([]byte("oversize: reject\nspool_dir: /var/spool/pop3proxy\nlimits:\n  buffer_memory: 64MiB\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Oversize != "reject" || cfg.SpoolDir != "/var/spool/pop3proxy" || cfg.Limits.BufferMemory != 64<<20 {
		t.Errorf("decoded %q %q %d", cfg.Oversize, cfg.SpoolDir, cfg.Limits.BufferMemory)
	}
	for doc, want := range map[string]string{
		"oversize: drop\n":                 `oversize: "drop" is not one of tag, pass, reject`,
		"spool_dir: relative/dir\n":        "spool_dir: must be an absolute path",
		"spool_dir: /etc/hostname\n":       "spool_dir: /etc/hostname is not a directory",
		"limits:\n  buffer_memory: lots\n": "limits.buffer_memory",
	} {
		if _, err := ParseConfig([]byte(doc)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err = %v, want %q", doc, err, want)
		}
	}
}
