package spamassassin

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/pop3proxy/pop3proxy/filter"
	"github.com/pop3proxy/pop3proxy/scanners/internal/sockaddr"
	"github.com/pop3proxy/pop3proxy/scanners/internal/spamtag"
	"github.com/pop3proxy/pop3proxy/yamlconf"
)

func init() {
	filter.Register(filter.PluginInfo{
		Type:          "spamassassin",
		New:           func() filter.Plugin { return new(Filter) },
		MaxConcurrent: DefaultMaxConcurrent,
	})
}

// DefaultMaxConcurrent is spamd's default --max-children: each child checks
// one message at a time, and more connections wait in its listen queue.
const DefaultMaxConcurrent = 5

const (
	// DefaultAddress is where spamd listens by default.
	DefaultAddress = "tcp://127.0.0.1:783"

	// DefaultMaxSize is spamc's (docs/scanners.md, spamd sizes and rules).
	DefaultMaxSize yamlconf.ByteSize = 500 << 10

	// maxSpamMaxSize is the largest --max-size spamc accepts.
	maxSpamMaxSize yamlconf.ByteSize = 256 << 20

	maxSpamdUser = 128
)

// Filter is the "spamassassin" filter.
//
//	filters:
//	  - type: spamassassin
//	    address: tcp://127.0.0.1:783   # or unix:///run/spamd.sock
//	    timeout: 30s
//	    on_error: pass
//	    subject_prefix: ""             # e.g. "[SPAM] "
//	    max_size: 500KiB
//	    user: ""
//	    max_concurrent: 5              # spamd's --max-children
//
// Every checked message gets X-Spam-Status, X-Spam-Level from 1 point and
// X-Spam-Flag: YES for spam; one over max_size gets "X-Spam-Status: skipped
// (message larger than N bytes)", and on_error does not apply.
//
// Set max_concurrent (see filter.PluginInfo; 0: no limit) to spamd's
// --max-children less what its other clients use.
type Filter struct {
	// Address: tcp://host:port or unix:///path; default DefaultAddress.
	Address string `yaml:"address"`
	// SubjectPrefix, if set, goes before the Subject of spam with a space;
	// printable ASCII, at most 64 characters. Off by default: nearly every
	// DKIM signature covers the Subject (RFC 6376 §5.4.1), and X-Spam-Flag
	// is enough for a client's filter rules.
	SubjectPrefix string `yaml:"subject_prefix"`
	// MaxSize: default 500KiB, as spamc; at most 256MiB.
	MaxSize yamlconf.ByteSize `yaml:"max_size"`
	// User, if set, is sent as spamd's User header, to select that user's
	// SpamAssassin preferences (spamd without -x/--nouser-config, or with
	// SQL/LDAP/virtual configuration).
	User string `yaml:"user"`

	log    *zap.Logger
	client *spamdClient
	prefix string
}

// Provision does not contact spamd, which may start after the proxy.
func (s *Filter) Provision(env filter.Env) error {
	s.log = env.Logger
	if s.log == nil {
		s.log = zap.NewNop()
	}

	addr := s.Address
	if addr == "" {
		addr = DefaultAddress
	}
	network, address, err := sockaddr.Parse(addr, "use tcp://host:port (spamd's default: tcp://127.0.0.1:783) or unix:///path/to/socket")
	if err != nil {
		return err
	}

	prefix, err := spamtag.NormaliseSubjectPrefix(s.SubjectPrefix)
	if err != nil {
		return err
	}

	switch {
	case s.MaxSize == 0:
		s.MaxSize = DefaultMaxSize
	case s.MaxSize > maxSpamMaxSize:
		return fmt.Errorf("max_size %d is larger than spamc's limit of %d bytes (256MiB)", s.MaxSize, maxSpamMaxSize)
	}

	if err := checkSpamdUser(s.User); err != nil {
		return err
	}

	s.prefix = prefix
	s.client = &spamdClient{network: network, address: address, user: s.User}
	return nil
}

// checkSpamdUser: the user key goes into a request header line.
func checkSpamdUser(u string) error {
	if u == "" {
		return nil
	}
	if len(u) > maxSpamdUser {
		return fmt.Errorf("user is %d bytes long; at most %d are allowed", len(u), maxSpamdUser)
	}
	if strings.TrimSpace(u) != u {
		return fmt.Errorf("user %s has leading or trailing spaces", strconv.Quote(u))
	}
	for i := 0; i < len(u); i++ {
		if c := u[i]; c < 0x20 || c == 0x7f {
			return fmt.Errorf("user %s contains a control character", strconv.Quote(u))
		}
	}
	return nil
}

func (s *Filter) Judge(ctx context.Context, m *filter.Message) (filter.Verdict, error) {
	if s.client == nil {
		return filter.Verdict{}, errors.New("spamassassin filter used without Provision")
	}
	if m.Size() > int64(s.MaxSize) {
		s.log.Info("message not checked for spam: larger than max_size", append(m.Meta.LogFields(),
			zap.Int64("size", m.Size()), zap.Int64("max_size", int64(s.MaxSize)))...)
		return filter.Verdict{Action: filter.Continue, Edits: spamtag.Skipped(int64(s.MaxSize))}, nil
	}

	start := time.Now()
	res, err := s.client.symbols(ctx, m.Open(), m.Size())
	took := time.Since(start)
	if err != nil {
		return filter.Verdict{}, err
	}
	if len(res.Dropped) > 0 {
		s.log.Warn("spamd listed rule names that are not valid; left out of X-Spam-Status",
			append(m.Meta.LogFields(), zap.Strings("dropped", res.Dropped))...)
	}

	score, required := spamScore(res.Score), spamScore(res.Threshold)
	v := filter.Verdict{Action: filter.Continue, Edits: spamtag.Verdict(res.Spam, res.Score, spamStatus(res, score, required))}
	fields := func() []zap.Field {
		return append(m.Meta.LogFields(),
			zap.String("score", score), zap.String("required", required),
			zap.Strings("tests", res.Symbols),
			zap.Int64("size", m.Size()), zap.Duration("took", took))
	}
	if !res.Spam {
		if ce := s.log.Check(zap.DebugLevel, "ham"); ce != nil {
			ce.Write(fields()...)
		}
		return v, nil
	}
	if s.prefix != "" {
		v.Edits = append(v.Edits, filter.SubjectPrefix(s.prefix))
	}
	v.Reason = "spam score " + score + "/" + required
	s.log.Info("spam", fields()...)
	return v, nil
}

// spamScore formats a score as SpamAssassin does ("%.1f"), so "-0.0"
// stays as spamd wrote it.
func spamScore(f float64) string { return strconv.FormatFloat(f, 'f', 1, 64) }

// spamStatus builds X-Spam-Status after SpamAssassin's default
// "_YESNO_, score=_SCORE_ required=_REQD_ tests=_TESTS_ autolearn=_AUTOLEARN_
// version=_VERSION_". SYMBOLS does not report autolearn, and version names
// the proxy, which wrote the field.
func spamStatus(res spamdResult, score, required string) string {
	yesno := "No"
	if res.Spam {
		yesno = "Yes"
	}
	tests := "none"
	if len(res.Symbols) > 0 {
		tests = strings.Join(res.Symbols, ",")
	}
	return yesno + ", score=" + score + " required=" + required + " tests=" + tests + " version=pop3proxy"
}

// Ping implements filter.Pinger: spamd answers PING with PONG.
func (s *Filter) Ping(ctx context.Context) error {
	if s.client == nil {
		return errors.New("spamassassin filter used without Provision")
	}
	if err := s.client.ping(ctx); err != nil {
		return &filter.PingError{Daemon: "spamd", Address: s.client.url(), Err: err}
	}
	return nil
}

var (
	_ filter.Judge       = (*Filter)(nil)
	_ filter.Provisioner = (*Filter)(nil)
	_ filter.Pinger      = (*Filter)(nil)
)
