package rspamd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/pop3proxy/pop3proxy/filter"
	"github.com/pop3proxy/pop3proxy/scanners/internal/daemon"
	"github.com/pop3proxy/pop3proxy/scanners/internal/spamtag"
	"github.com/pop3proxy/pop3proxy/yamlconf"
)

func init() {
	filter.Register(filter.PluginInfo{
		Type:          "rspamd",
		New:           func() filter.Plugin { return new(Filter) },
		MaxConcurrent: DefaultMaxConcurrent,
	})
}

// DefaultMaxConcurrent is the only bound on the load on rspamd, whose
// workers take any number of connections (max_tasks 0). A check mostly
// waits for DNS after tens of ms of CPU; eight overlap those waits on a
// small host without a burst piling up hundreds that hit task_timeout (8 s).
const DefaultMaxConcurrent = 8

const (
	// DefaultAddress is the normal worker of Debian's rspamd.
	DefaultAddress = "http://127.0.0.1:11333"

	// DefaultMaxSize is spamc's: spam is small, and checking grows with size.
	DefaultMaxSize yamlconf.ByteSize = 500 << 10

	// maxMaxSize is rspamd's default max_message (docs/scanners.md, rspamd sizes and timing).
	maxMaxSize yamlconf.ByteSize = 50 << 20

	maxPassword = 256
)

// Filter is the "rspamd" filter.
//
//	filters:
//	  - type: rspamd
//	    address: http://127.0.0.1:11333   # the normal worker
//	    password: ""                      # for the controller (:11334)
//	    timeout: 30s
//	    on_error: pass
//	    subject_prefix: ""                # e.g. "[SPAM] "
//	    max_size: 500KiB
//	    add_milter_headers: false
//	    max_concurrent: 8
//
// Every checked message gets X-Spam-Status (with action=), X-Spam-Level
// from 1 point and X-Spam-Flag: YES for spam; one over max_size gets
// "X-Spam-Status: skipped (...)", and on_error does not apply.
//
// max_concurrent (a key of every filter, see filter.PluginInfo) is how
// many messages the filter sends to rspamd at once, over all sessions;
// the others wait for a turn within timeout. 0 means no limit.
type Filter struct {
	// Address is an rspamd worker's http:// or https:// URL with host, port
	// and optionally a reverse proxy's path; default DefaultAddress.
	Address string `yaml:"address"`
	// Password is sent in the Password header, which the controller wants
	// from clients outside its secure_ip; the normal worker ignores it.
	Password string `yaml:"password"`
	// SubjectPrefix, if set, goes before the Subject of spam with a space;
	// printable ASCII, at most 64 characters. Off by default: nearly every
	// DKIM signature covers the Subject (RFC 6376 §5.4.1).
	SubjectPrefix string `yaml:"subject_prefix"`
	// MaxSize: default 500KiB, at most 50MiB (rspamd's own max_message).
	MaxSize yamlconf.ByteSize `yaml:"max_size"`
	// AddMilterHeaders also adds the X-* and Authentication-Results fields of
	// rspamd's milter_headers module (such as X-Spamd-Result); see milterEdits.
	AddMilterHeaders bool `yaml:"add_milter_headers"`

	log    *zap.Logger
	client *client
	prefix string
}

// Provision does not contact rspamd, which may start after the proxy.
func (f *Filter) Provision(env filter.Env) error {
	f.log = env.Logger
	if f.log == nil {
		f.log = zap.NewNop()
	}

	addr := f.Address
	if addr == "" {
		addr = DefaultAddress
	}
	base, err := parseAddress(addr)
	if err != nil {
		return err
	}
	if err := checkPassword(f.Password); err != nil {
		return err
	}
	if f.Password != "" && base.Scheme == "http" && !isLoopback(base.Hostname()) {
		f.log.Warn("rspamd password is sent unencrypted to a host that is not loopback; use https:// or a local rspamd",
			zap.String("address", base.String()))
	}
	prefix, err := spamtag.NormaliseSubjectPrefix(f.SubjectPrefix)
	if err != nil {
		return err
	}
	switch {
	case f.MaxSize == 0:
		f.MaxSize = DefaultMaxSize
	case f.MaxSize < 0:
		return fmt.Errorf("max_size %d is negative", f.MaxSize)
	case f.MaxSize > maxMaxSize:
		return fmt.Errorf("max_size %d is larger than %d bytes (50MiB), rspamd's default max_message: rspamd drops the connection for larger messages", f.MaxSize, maxMaxSize)
	}

	f.prefix = prefix
	f.client = newClient(base, f.Password)
	return nil
}

func parseAddress(addr string) (*url.URL, error) {
	const hint = "use http://host:port (rspamd's normal worker: " + DefaultAddress + ")"
	u, err := url.Parse(addr)
	if err != nil {
		return nil, fmt.Errorf("address %q: %v; %s", addr, err, hint)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("address %q: scheme must be http or https; %s", addr, hint)
	case u.Opaque != "" || u.Host == "":
		return nil, fmt.Errorf("address %q has no host; %s", addr, hint)
	case u.User != nil:
		return nil, fmt.Errorf("address %q: no user or password in the URL; set the password key", addr)
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return nil, fmt.Errorf("address %q: no query or fragment allowed; %s", addr, hint)
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("address %q has no host; %s", addr, hint)
	}
	port := u.Port()
	if port == "" {
		return nil, fmt.Errorf("address %q has no port; %s", addr, hint)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return nil, fmt.Errorf("address %q: port %q is not a number from 1 to 65535", addr, port)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkPassword refuses what cannot go into a header line as it is.
func checkPassword(p string) error {
	if len(p) > maxPassword {
		return fmt.Errorf("password is %d bytes long; at most %d are allowed", len(p), maxPassword)
	}
	if strings.TrimSpace(p) != p {
		return errors.New("password has leading or trailing white space")
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c < 0x20 || c == 0x7f {
			return errors.New("password contains a control character")
		}
	}
	return nil
}

// Judge asks rspamd for a verdict; spam is tagged, never rejected.
func (f *Filter) Judge(ctx context.Context, m *filter.Message) (filter.Verdict, error) {
	if f.client == nil {
		return filter.Verdict{}, errors.New("rspamd filter used without Provision")
	}
	if m.Size() > int64(f.MaxSize) {
		f.log.Info("message not checked for spam: larger than max_size", append(m.Meta.LogFields(),
			zap.Int64("size", m.Size()), zap.Int64("max_size", int64(f.MaxSize)))...)
		return filter.Verdict{Action: filter.Continue, Edits: spamtag.Skipped(int64(f.MaxSize))}, nil
	}

	env, err := envelopeOf(m)
	if err != nil {
		return filter.Verdict{}, fmt.Errorf("rspamd %s: %w", f.client.base, err)
	}
	start := time.Now()
	rep, err := f.client.check(ctx, m, env)
	took := time.Since(start)
	if err != nil {
		return filter.Verdict{}, err
	}
	spam, err := isSpam(rep.Action)
	if err != nil {
		return filter.Verdict{}, fmt.Errorf("rspamd %s: %w", f.client.base, err)
	}

	tests, dropped := statusTests(rep.Symbols)
	if len(dropped) > 0 {
		f.log.Warn("rspamd returned symbol names that cannot go into X-Spam-Status; left out",
			append(m.Meta.LogFields(), zap.Strings("dropped", dropped))...)
	}
	score, required := formatScore(rep.Score), formatScore(rep.Required)
	edits := spamtag.Verdict(spam, rep.Score, spamStatus(spam, score, required, tests, rep.Action))
	if f.AddMilterHeaders {
		milter, skipped := milterEdits(rep.Milter)
		if len(skipped) > 0 {
			f.log.Warn("rspamd milter header fields left out", append(m.Meta.LogFields(), zap.Strings("skipped", skipped))...)
		}
		edits = append(edits, milter...)
	}

	v := filter.Verdict{Action: filter.Continue, Edits: edits}
	fields := func() []zap.Field {
		return append(m.Meta.LogFields(),
			zap.String("action", rep.Action), zap.String("score", score), zap.String("required", required),
			zap.Strings("tests", tests), zap.Int64("size", m.Size()), zap.Duration("took", took))
	}
	if !spam {
		if ce := f.log.Check(zap.DebugLevel, "ham"); ce != nil {
			ce.Write(fields()...)
		}
		return v, nil
	}
	if f.prefix != "" {
		v.Edits = append(v.Edits, filter.SubjectPrefix(f.prefix))
	}
	v.Reason = "spam: rspamd action " + rep.Action + ", score " + score + "/" + required
	f.log.Info("spam", fields()...)
	return v, nil
}

// Ping implements filter.Pinger: the worker at address answers GET /ping
// with "pong", without a password on rspamd 3.4's controller too.
func (f *Filter) Ping(ctx context.Context) error {
	if f.client == nil {
		return errors.New("rspamd filter used without Provision")
	}
	if err := f.client.ping(ctx); err != nil {
		return &filter.PingError{Daemon: "rspamd", Address: f.client.base, Err: err}
	}
	return nil
}

// Close releases idle connections to rspamd.
func (f *Filter) Close() error {
	if f.client != nil {
		f.client.transport.CloseIdleConnections()
	}
	return nil
}

// isSpam maps rspamd's normalised action to the verdict.
func isSpam(action string) (bool, error) {
	switch action {
	case "no action", "greylist":
		return false, nil
	case "add header", "rewrite subject", "reject", "discard", "quarantine":
		return true, nil
	case "soft reject":
		return false, errors.New(`rspamd answered "soft reject": try again later`)
	}
	return false, fmt.Errorf("rspamd answered the unknown action %s", daemon.Quote(action))
}

// normaliseAction turns the configuration's "add_header" into "add header".
func normaliseAction(a string) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimSpace(a)), "_", " ")
}

// formatScore writes a score as rspamd's own header fields do ("%.2f"),
// rspamd's scores having two significant decimals (0.05 points exist).
func formatScore(f float64) string { return strconv.FormatFloat(f, 'f', 2, 64) }

// spamStatus follows SpamAssassin's "_YESNO_, score=_SCORE_ required=_REQD_
// tests=_TESTS_", then action= with underscores to keep key=value words.
func spamStatus(spam bool, score, required string, tests []string, action string) string {
	yesno := "No"
	if spam {
		yesno = "Yes"
	}
	list := "none"
	if len(tests) > 0 {
		list = strings.Join(tests, ",")
	}
	return yesno + ", score=" + score + " required=" + required + " tests=" + list +
		" action=" + strings.ReplaceAll(action, " ", "_")
}

const (
	// maxStatusTests bounds tests= in X-Spam-Status; rspamd reports 15 to
	// 40 symbols for a typical message, most of them worth 0 points.
	maxStatusTests = 50
	maxSymbolName  = 128
)

// statusTests returns the sorted symbol names for X-Spam-Status, those that
// moved the score most beyond maxStatusTests. Invalid names are dropped
// and returned, so a hostile reply puts no comma, space or line break in.
func statusTests(syms []symbol) (tests, dropped []string) {
	valid := make([]symbol, 0, len(syms))
	for _, s := range syms {
		if validSymbol(s.Name) {
			valid = append(valid, s)
		} else {
			dropped = append(dropped, daemon.Quote(s.Name))
		}
	}
	if len(valid) > maxStatusTests {
		slices.SortFunc(valid, func(a, b symbol) int {
			if c := cmpAbs(b.Score, a.Score); c != 0 {
				return c
			}
			return strings.Compare(a.Name, b.Name)
		})
		valid = valid[:maxStatusTests]
	}
	for _, s := range valid {
		tests = append(tests, s.Name)
	}
	slices.Sort(tests)
	return tests, dropped
}

func cmpAbs(a, b float64) int {
	if a < 0 {
		a = -a
	}
	if b < 0 {
		b = -b
	}
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func validSymbol(s string) bool {
	if s == "" || len(s) > maxSymbolName {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

var (
	_ filter.Judge       = (*Filter)(nil)
	_ filter.Provisioner = (*Filter)(nil)
	_ filter.Pinger      = (*Filter)(nil)
)
