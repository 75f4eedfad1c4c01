package app

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/go-multierror"
	"go.yaml.in/yaml/v3"

	"github.com/pop3proxy/pop3proxy/proxy"
	"github.com/pop3proxy/pop3proxy/upstream"
	"github.com/pop3proxy/pop3proxy/yamlconf"
)

// Config is the YAML configuration file. The key names are a contract with
// the README, config.yaml.example and the tests: extend, never rename.
type Config struct {
	// Listen is the plain POP3 listener (STLS offered with tls.cert).
	Listen string `yaml:"listen"`
	// ListenTLS is the implicit-TLS (POP3S, RFC 8314) listener.
	ListenTLS string `yaml:"listen_tls"`
	// ListenProxy and ListenProxyTLS are the same behind a load balancer
	// that sends a PROXY protocol header first.
	ListenProxy    string              `yaml:"listen_proxy"`
	ListenProxyTLS string              `yaml:"listen_proxy_tls"`
	ProxyProtocol  ProxyProtocolConfig `yaml:"proxy_protocol"`
	TLS            TLSConfig           `yaml:"tls"`
	MaxSize        yamlconf.ByteSize   `yaml:"max_size"`
	// Oversize is tag, pass or reject: what happens to a message too large
	// to be checked (filter.ParseOversize).
	Oversize string `yaml:"oversize"`
	// SpoolDir holds messages that do not fit in limits.buffer_memory.
	SpoolDir string `yaml:"spool_dir"`
	// ScanKeepalive is how long a client waits in silence for a scan
	// before the proxy answers "+OK" and keeps it alive.
	ScanKeepalive yamlconf.Duration `yaml:"scan_keepalive"`
	// ScanAhead is how many messages ahead of the client are fetched with
	// TOP and checked while it reads; 0 turns it off.
	ScanAhead int `yaml:"scan_ahead"`
	// Cache keeps the filter chain's decisions.
	Cache    CacheConfig    `yaml:"cache"`
	Upstream UpstreamConfig `yaml:"upstream"`
	Filters  []yaml.Node    `yaml:"filters"`
	Shutdown ShutdownConfig `yaml:"shutdown"`
	Limits   LimitsConfig   `yaml:"limits"`
	Server   ServerConfig   `yaml:"server"`
	Log      LogConfig      `yaml:"log"`
	// Metrics is the HTTP listener for /metrics, /healthz and /readyz.
	Metrics MetricsConfig `yaml:"metrics"`
}

// ProxyProtocolConfig says whom the PROXY listeners trust.
type ProxyProtocolConfig struct {
	Trusted       []string          `yaml:"trusted"`
	HeaderTimeout yamlconf.Duration `yaml:"header_timeout"`
}

// TLSConfig is the proxy's own certificate, for STLS and the TLS listeners.
type TLSConfig struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// Require is auto, true or false: whether clients must use TLS before
	// they send a password (see requireTLS).
	Require               string `yaml:"require"`
	RequireExemptLoopback bool   `yaml:"require_exempt_loopback"`
}

// requireTLS resolves tls.require. auto is Dovecot's safe default: with a
// certificate, passwords travel only under TLS (loopback clients exempt
// while require_exempt_loopback is on); without one, validate has made
// sure that only this machine can connect.
func (t TLSConfig) requireTLS() bool {
	return t.Require == "true" || (t.Require == "auto" && t.Cert != "")
}

// UpstreamConfig says where logins may be routed and how to talk there.
type UpstreamConfig struct {
	Default            string              `yaml:"default"`
	Allow              []string            `yaml:"allow"`
	AllowPrivate       string              `yaml:"allow_private"`
	Separators         string              `yaml:"separators"`
	TLS                string              `yaml:"tls"`
	CAFile             string              `yaml:"ca_file"`
	InsecureSkipVerify bool                `yaml:"insecure_skip_verify"`
	DialTimeout        yamlconf.Duration   `yaml:"dial_timeout"`
	Timeout            yamlconf.Duration   `yaml:"timeout"`
	Keepalive          yamlconf.Duration   `yaml:"keepalive"`
	Destinations       []DestinationConfig `yaml:"destinations"`
	MaxMessages        int                 `yaml:"max_messages"`
}

// DestinationConfig overrides the upstream TLS settings for destinations
// matching a host:port glob.
type DestinationConfig struct {
	Match              string `yaml:"match"`
	TLS                string `yaml:"tls"`
	CAFile             string `yaml:"ca_file"`
	InsecureSkipVerify *bool  `yaml:"insecure_skip_verify"`
}

// ShutdownConfig controls the SHUTDOWN command and the drain on SIGTERM.
type ShutdownConfig struct {
	AllowFrom    []string          `yaml:"allow_from"`
	DrainTimeout yamlconf.Duration `yaml:"drain_timeout"`
}

// LimitsConfig bounds what a client controls.
type LimitsConfig struct {
	MaxLineLength       int               `yaml:"max_line_length"`
	MaxBadCommands      int               `yaml:"max_bad_commands"`
	AuthTimeout         yamlconf.Duration `yaml:"auth_timeout"`
	IdleTimeout         yamlconf.Duration `yaml:"idle_timeout"`
	WriteTimeout        yamlconf.Duration `yaml:"write_timeout"`
	MaxConnections      int               `yaml:"max_connections"`
	MaxConnectionsPerIP int               `yaml:"max_connections_per_ip"`
	FailedLoginDelay    yamlconf.Duration `yaml:"failed_login_delay"`
	MaxFailedLoginDelay yamlconf.Duration `yaml:"max_failed_login_delay"`
	HandshakeTimeout    yamlconf.Duration `yaml:"handshake_timeout"`
	// BufferMemory bounds the message bytes held in memory by all sessions
	// together while the filter chain decides; the rest goes to spool_dir.
	BufferMemory yamlconf.ByteSize `yaml:"buffer_memory"`
}

// ServerConfig is what the client-facing server says about itself.
type ServerConfig struct {
	Greeting string `yaml:"greeting"`
}

// LogConfig selects the zap logger.
type LogConfig struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
	// Caller adds the source position of each entry, for debugging the
	// proxy; operators need the message and its fields.
	Caller bool `yaml:"caller"`
}

// minIdleTimeout is RFC 1939 §3's floor for the autologout timer.
const minIdleTimeout = 10 * time.Minute

// DefaultConfig returns the value of every key the file does not set.
func DefaultConfig() Config {
	return Config{
		Listen:        "127.0.0.1:1110",
		MaxSize:       10 << 20,
		Oversize:      "tag",
		ScanKeepalive: yamlconf.Duration(proxy.DefaultScanKeepalive),
		ScanAhead:     DefaultScanAhead,
		Cache:         defaultCacheConfig(),
		ProxyProtocol: ProxyProtocolConfig{
			Trusted:       []string{"127.0.0.1/32", "::1/128"},
			HeaderTimeout: yamlconf.Duration(5 * time.Second),
		},
		TLS: TLSConfig{Require: "auto", RequireExemptLoopback: true},
		Upstream: UpstreamConfig{
			AllowPrivate: "auto",
			Separators:   "%#@",
			TLS:          "auto",
			DialTimeout:  yamlconf.Duration(10 * time.Second),
			Timeout:      yamlconf.Duration(60 * time.Second),
			Keepalive:    yamlconf.Duration(proxy.DefaultUpstreamKeepalive),
			MaxMessages:  upstream.DefaultMaxMessages,
		},
		Shutdown: ShutdownConfig{
			AllowFrom:    []string{"127.0.0.0/8", "::1/128"},
			DrainTimeout: yamlconf.Duration(30 * time.Second),
		},
		Limits: LimitsConfig{
			MaxLineLength:       4096,
			MaxBadCommands:      10,
			AuthTimeout:         yamlconf.Duration(60 * time.Second),
			IdleTimeout:         yamlconf.Duration(minIdleTimeout),
			WriteTimeout:        yamlconf.Duration(60 * time.Second),
			MaxConnections:      1000,
			MaxConnectionsPerIP: 20,
			FailedLoginDelay:    yamlconf.Duration(time.Second),
			MaxFailedLoginDelay: yamlconf.Duration(30 * time.Second),
			HandshakeTimeout:    yamlconf.Duration(10 * time.Second),
			BufferMemory:        256 << 20,
		},
		Server:  ServerConfig{Greeting: "pop3proxy ready"},
		Log:     LogConfig{Level: "info", Format: "console"},
		Metrics: MetricsConfig{CheckInterval: yamlconf.Duration(defaultCheckInterval)},
	}
}

// LoadConfig reads and validates a file, reporting every problem at once.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	cfg, err := ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// ParseConfig decodes and validates YAML. Every key is optional, so a
// document without any (empty, or only comments) is all defaults.
func ParseConfig(data []byte) (*Config, error) {
	cfg := DefaultConfig()
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("not valid YAML: %s", yamlconf.CleanError(err))
	}
	var result *multierror.Error
	if !emptyDocument(&root) {
		for _, e := range yamlconf.DecodeStrict(&root, &cfg, "") {
			result = multierror.Append(result, e)
		}
	}
	for _, e := range cfg.validate() {
		result = multierror.Append(result, e)
	}
	if err := result.ErrorOrNil(); err != nil {
		result.ErrorFormat = formatErrors
		return nil, result
	}
	return &cfg, nil
}

// emptyDocument reports whether root holds no value at all: yaml.v3 gives
// no node for empty input, and a document without content for one that is
// only comments.
func emptyDocument(root *yaml.Node) bool {
	return root.Kind == 0 || (root.Kind == yaml.DocumentNode && len(root.Content) == 0)
}

func formatErrors(errs []error) string {
	lines := make([]string, len(errs))
	for i, e := range errs {
		lines[i] = "  - " + e.Error()
	}
	return fmt.Sprintf("%d problem(s):\n%s", len(errs), strings.Join(lines, "\n"))
}
