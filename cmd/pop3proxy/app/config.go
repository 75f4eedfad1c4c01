package app

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/go-multierror"
	"go.yaml.in/yaml/v3"

	"github.com/pop3proxy/pop3proxy/filter"
	"github.com/pop3proxy/pop3proxy/proxy/gateway"
	"github.com/pop3proxy/pop3proxy/upstream"
)

// Config is the YAML configuration file. The key names are a contract with
// the README, config.yaml.example and the tests: extend, never rename.
type Config struct {
	Listen  string          `yaml:"listen"`
	MaxSize filter.ByteSize `yaml:"max_size"`
	// ScanKeepalive is how long a client waits in silence for a scan
	// before the proxy answers "+OK" and keeps it alive.
	ScanKeepalive filter.Duration `yaml:"scan_keepalive"`
	Upstream      UpstreamConfig  `yaml:"upstream"`
	Filters       []yaml.Node     `yaml:"filters"`
	Shutdown      ShutdownConfig  `yaml:"shutdown"`
	Limits        LimitsConfig    `yaml:"limits"`
	Server        ServerConfig    `yaml:"server"`
	Log           LogConfig       `yaml:"log"`
}

// UpstreamConfig says where logins may be routed and how to talk there.
type UpstreamConfig struct {
	Default     string          `yaml:"default"`
	Allow       []string        `yaml:"allow"`
	Separators  string          `yaml:"separators"`
	TLS         string          `yaml:"tls"`
	CAFile      string          `yaml:"ca_file"`
	DialTimeout filter.Duration `yaml:"dial_timeout"`
	Timeout     filter.Duration `yaml:"timeout"`
}

// ShutdownConfig controls the SHUTDOWN command and the drain on SIGTERM.
type ShutdownConfig struct {
	AllowFrom    []string        `yaml:"allow_from"`
	DrainTimeout filter.Duration `yaml:"drain_timeout"`
}

// LimitsConfig bounds what a client controls.
type LimitsConfig struct {
	MaxLineLength  int             `yaml:"max_line_length"`
	MaxBadCommands int             `yaml:"max_bad_commands"`
	AuthTimeout    filter.Duration `yaml:"auth_timeout"`
	IdleTimeout    filter.Duration `yaml:"idle_timeout"`
	WriteTimeout   filter.Duration `yaml:"write_timeout"`
}

// ServerConfig is what the client-facing server says about itself.
type ServerConfig struct {
	Greeting string `yaml:"greeting"`
}

// LogConfig selects the zap logger.
type LogConfig struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// minIdleTimeout is RFC 1939 §3's floor for the autologout timer.
const minIdleTimeout = 10 * time.Minute

// DefaultConfig returns the configuration used for every key the file does
// not set.
func DefaultConfig() Config {
	return Config{
		Listen:        "127.0.0.1:1110",
		MaxSize:       10 << 20,
		ScanKeepalive: filter.Duration(gateway.DefaultScanKeepalive),
		Upstream: UpstreamConfig{
			Separators:  "%#@",
			TLS:         "auto",
			DialTimeout: filter.Duration(10 * time.Second),
			Timeout:     filter.Duration(60 * time.Second),
		},
		Shutdown: ShutdownConfig{
			AllowFrom:    []string{"127.0.0.0/8", "::1/128"},
			DrainTimeout: filter.Duration(30 * time.Second),
		},
		Limits: LimitsConfig{
			MaxLineLength:  4096,
			MaxBadCommands: 10,
			AuthTimeout:    filter.Duration(60 * time.Second),
			IdleTimeout:    filter.Duration(minIdleTimeout),
			WriteTimeout:   filter.Duration(60 * time.Second),
		},
		Server: ServerConfig{Greeting: "pop3proxy ready"},
		Log:    LogConfig{Level: "info", Format: "console"},
	}
}

// LoadConfig reads and validates a configuration file, reporting every
// problem at once.
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

// ParseConfig decodes and validates YAML configuration bytes.
func ParseConfig(data []byte) (*Config, error) {
	cfg := DefaultConfig()
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("not valid YAML: %s", filter.CleanYAMLError(err))
	}
	var result *multierror.Error
	for _, e := range filter.DecodeStrict(&root, &cfg, "") {
		result = multierror.Append(result, e)
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

func formatErrors(errs []error) string {
	lines := make([]string, len(errs))
	for i, e := range errs {
		lines[i] = "  - " + e.Error()
	}
	return fmt.Sprintf("%d problem(s):\n%s", len(errs), strings.Join(lines, "\n"))
}

// validate checks values that decoded but make no sense, each reported with
// its key path.
func (c *Config) validate() []error {
	var errs []error
	bad := func(path, format string, args ...any) {
		errs = append(errs, filter.NewFieldError(path, 0, format, args...))
	}

	listenLoopback, err := isLoopbackListen(c.Listen)
	if err != nil {
		bad("listen", "%v", err)
	}
	if c.MaxSize <= 0 {
		bad("max_size", "must be greater than 0")
	}

	u := c.Upstream
	allow, err := upstream.NewAllowList(u.Allow)
	if err != nil {
		bad("upstream.allow", "%v", err)
	}
	if u.Default != "" {
		if _, _, err := net.SplitHostPort(u.Default); err != nil {
			bad("upstream.default", "must be host:port: %v", err)
		} else if allow != nil && len(u.Allow) > 0 && !allow.Allows(u.Default) {
			bad("upstream.default", "%q is not matched by upstream.allow, so no login could use it", u.Default)
		}
	}
	if u.Separators == "" && u.Default == "" {
		bad("upstream.separators", "must not be empty unless upstream.default is set (no login could be routed)")
	}
	for _, r := range u.Separators {
		if !strings.ContainsRune("%#@!", r) {
			bad("upstream.separators", "%q is not a supported separator (use any of %%, #, @, !)", r)
		}
	}
	if _, err := upstream.ParseTLSMode(u.TLS); err != nil {
		bad("upstream.tls", "%v", err)
	}
	if u.CAFile != "" {
		if _, err := loadCAFile(u.CAFile); err != nil {
			bad("upstream.ca_file", "%v", err)
		}
	}
	positive(bad, "upstream.dial_timeout", u.DialTimeout)
	positive(bad, "upstream.timeout", u.Timeout)
	if err == nil && !listenLoopback && len(u.Allow) == 0 {
		bad("upstream.allow", "must be set when listen (%s) is not a loopback address: "+
			"without it anyone who can connect could make the proxy dial any host and port", c.Listen)
	}

	positive(bad, "scan_keepalive", c.ScanKeepalive)
	// Building the chain checks every filter block (unknown types and
	// keys, values each plugin rejects); the real chain is built again
	// with the configured logger when the proxy starts.
	if chain, err := filter.Build(c.Filters, nil); err != nil {
		var me *multierror.Error
		if errors.As(err, &me) {
			errs = append(errs, me.Errors...)
		} else {
			errs = append(errs, err)
		}
	} else {
		chain.Close()
	}

	for i, s := range c.Shutdown.AllowFrom {
		if _, err := parsePrefix(s); err != nil {
			bad(fmt.Sprintf("shutdown.allow_from[%d]", i), "%v", err)
		}
	}
	positive(bad, "shutdown.drain_timeout", c.Shutdown.DrainTimeout)

	l := c.Limits
	if l.MaxLineLength < 255 {
		// RFC 2449 §4: servers that support CAPA accept 255-octet commands.
		bad("limits.max_line_length", "must be at least 255 (RFC 2449 §4)")
	}
	if l.MaxBadCommands < 1 {
		bad("limits.max_bad_commands", "must be at least 1")
	}
	positive(bad, "limits.auth_timeout", l.AuthTimeout)
	if l.IdleTimeout.D() < minIdleTimeout {
		bad("limits.idle_timeout", "must be at least 10m (RFC 1939 §3 autologout minimum)")
	}
	positive(bad, "limits.write_timeout", l.WriteTimeout)

	if strings.ContainsAny(c.Server.Greeting, "\r\n<>") || len(c.Server.Greeting) > 400 {
		bad("server.greeting", "must be one line of at most 400 characters without < or > (clients read <...> as an APOP challenge)")
	}

	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "console", "json":
	default:
		bad("log.format", "%q is not one of console, json", c.Log.Format)
	}
	return errs
}

func positive(bad func(string, string, ...any), path string, d filter.Duration) {
	if d <= 0 {
		bad(path, "must be greater than 0")
	}
}

// isLoopbackListen reports whether a listen address only accepts local
// connections. An empty host listens on every interface.
func isLoopbackListen(addr string) (bool, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false, fmt.Errorf("must be host:port: %v", err)
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return false, fmt.Errorf("bad port %q", port)
	}
	if host == "localhost" {
		return true, nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		if host == "" {
			return false, nil
		}
		return false, fmt.Errorf("host must be an IP address or localhost, got %q", host)
	}
	return ip.IsLoopback(), nil
}

// parsePrefix accepts a CIDR prefix or a single address.
func parsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	return netip.Prefix{}, fmt.Errorf("%q is neither an address nor a CIDR prefix", s)
}

// loadCAFile reads PEM certificates to trust in addition to the system
// roots.
func loadCAFile(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("no PEM certificate found in " + path)
	}
	return pool, nil
}
