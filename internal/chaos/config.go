//go:build linux

package chaos

import (
	"fmt"
	"os"
	"strings"
)

// proxyConfig is the proxy's configuration in a round. Reload faults
// change the spam filter and the quarantine limit.
type proxyConfig struct {
	Listen, Metrics      string
	Spool, Quarantine    string
	Clamd, Spamd, Rspamd string // relay addresses
	UseRspamd            bool   // rspamd instead of spamd
	QuarantineFull       bool
	KeepaliveShort       bool
	Redis                string // the verdict cache's relay
	ScanAhead            int
	// limits.max_connections and max_connections_per_ip
	MaxConnections, MaxConnectionsPerIP int
}

// yaml renders the configuration. Timeouts are short so that stalls cost
// seconds, not minutes; buffer_memory is small, so that several large
// messages at once go to spool files.
func (c proxyConfig) yaml() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("listen: %q", c.Listen)
	w("max_size: 200KiB")
	w("oversize: tag")
	w("spool_dir: %q", c.Spool)
	keepalive := "2s"
	if c.KeepaliveShort {
		keepalive = "1s"
	}
	w("scan_keepalive: %s", keepalive)
	w("scan_ahead: %d", c.ScanAhead)
	w("cache: {type: redis, address: %q}", c.Redis)
	w("upstream:")
	w("  allow: [\"127.0.0.1:*\"]")
	w("  tls: none")
	w("  dial_timeout: 3s")
	w("  timeout: 4s")
	w("  keepalive: 1s")
	w("filters:")
	w("  - type: clamav")
	w("    address: tcp://%s", c.Clamd)
	w("    timeout: 4s")
	w("    on_error: tempfail")
	w("    action: replace")
	w("    quarantine_dir: %q", c.Quarantine)
	if c.QuarantineFull {
		w("    quarantine_max_bytes: 1KiB")
	}
	w("    max_stream: 1MiB")
	if c.UseRspamd {
		w("  - type: rspamd")
		w("    address: http://%s", c.Rspamd)
	} else {
		w("  - type: spamassassin")
		w("    address: tcp://%s", c.Spamd)
	}
	w("    timeout: 4s")
	w("    on_error: pass")
	w("  - type: header")
	w("    add: {X-Scanned-By: pop3proxy}")
	w("shutdown:")
	w("  drain_timeout: 5s")
	w("limits:")
	w("  write_timeout: 10s")
	w("  failed_login_delay: 0s")
	w("  max_connections_per_ip: %d", c.MaxConnectionsPerIP)
	w("  max_connections: %d", c.MaxConnections)
	w("  buffer_memory: 512KiB")
	w("log:")
	w("  level: info")
	w("metrics:")
	w("  listen: %q", c.Metrics)
	w("  check_interval: 1s")
	return b.String()
}

func (w *World) writeConfig() error {
	tmp := w.proxy.ConfigPath + ".tmp"
	if err := os.WriteFile(tmp, []byte(w.config.yaml()), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, w.proxy.ConfigPath)
}

// expect is what the oracle allows the configured chain to add.
var expect = Expect{
	Added: "X-Scanned-By: pop3proxy\r\n",
	AddedPrefix: []string{
		"X-Virus-Scanned", "X-Spam-Flag", "X-Spam-Status", "X-Spam-Level",
		"X-Pop3proxy-Scan", // the keepalive of a slow scan
	},
	Unscanned:    "X-Pop3proxy-Unscanned",
	NoticeMarker: "X-Virus-Status: Infected\r\n",
}
