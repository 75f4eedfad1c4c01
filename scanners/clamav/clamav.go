package clamav

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/emersion/go-message/textproto"
	"go.uber.org/zap"

	"github.com/pop3proxy/pop3proxy/filter"
	"github.com/pop3proxy/pop3proxy/scanners/internal/sockaddr"
	"github.com/pop3proxy/pop3proxy/yamlconf"
)

func init() {
	filter.Register(filter.PluginInfo{Type: "clamav", New: func() filter.Plugin { return new(Filter) }})
}

// The values of the action key.
const (
	ActionReplace = "replace"
	ActionReject  = "reject"
	ActionTag     = "tag"
)

// The header fields the plugin sets. Incoming fields of these names are
// removed from every message delivered, so that none can arrive claiming
// to be clean; other X-Virus-* fields (an upstream scanner's) stay.
const (
	ScannedField = "X-Virus-Scanned"
	StatusField  = "X-Virus-Status"
	NameField    = "X-Virus-Name"
)

// CleanValue is the X-Virus-Scanned value of a clean message.
const CleanValue = "clean (ClamAV via pop3proxy)"

// SubjectPrefix starts the Subject of a virus notice.
const SubjectPrefix = "[VIRUS REMOVED] "

// DefaultMaxStream is max_stream's default: Debian's StreamMaxLength and
// MaxFileSize (docs/scanners.md, clamd limits).
const DefaultMaxStream yamlconf.ByteSize = 25 << 20

// maxHeader bounds the header read to build a notice (see the filter
// package documentation, Header edits).
const maxHeader = 1 << 20

// Filter is the "clamav" filter. A clean message gets "X-Virus-Scanned:
// clean (ClamAV via pop3proxy)". The notice that replaces an infected
// message is a short text/plain message with the original's From, To, Cc,
// Date, Subject (behind "[VIRUS REMOVED] ") and Message-ID, byte for byte;
// it names the virus and the quarantine file.
//
//	filters:
//	- type: clamav
//	  address: unix:///run/clamav/clamd.ctl   # or tcp://host:3310
//	  timeout: 30s
//	  on_error: tempfail
//	  action: replace          # replace | reject | tag
//	  quarantine_dir: ""       # when set, the original infected message is kept here
//	  max_stream: 25MiB        # clamd's StreamMaxLength; larger messages are an error
type Filter struct {
	// Address is clamd's socket, unix:///path or tcp://host:port. Required.
	Address string `yaml:"address"`
	// Action is what a virus hit does: "replace" (default) delivers the
	// notice instead; "reject" answers the RETR with -ERR and leaves the
	// message on the server; "tag" delivers the message with
	// X-Virus-Status: Infected and X-Virus-Name.
	Action string `yaml:"action"`
	// QuarantineDir, when set, is an existing directory (absolute path)
	// where the original of every message replaced or rejected for a virus
	// is stored, once per content (a rejected message comes back at every
	// poll), as <UTC time>-<16 hex digits of its SHA-256>.eml, mode 0600.
	// The proxy does not create it; mail is private, so make it 0700. If
	// storing fails, the message is not delivered, whatever on_error says.
	QuarantineDir string `yaml:"quarantine_dir"`
	// MaxStream is the largest message sent to clamd; a larger one is an
	// error (ErrTooLarge), never clean. It should equal clamd's
	// StreamMaxLength, and clamd's MaxFileSize should be at least as large:
	// clamd answers "stream: OK" without scanning a stream above
	// MaxFileSize (docs/scanners.md, clamd limits). Default 25MiB.
	MaxStream yamlconf.ByteSize `yaml:"max_stream"`

	log    *zap.Logger
	client clamdClient
}

// Provision checks the configuration. It does not contact clamd, which may
// start after the proxy.
func (c *Filter) Provision(env filter.Env) error {
	c.log = env.Logger
	if c.log == nil {
		c.log = zap.NewNop()
	}
	var problems []string
	network, address, err := sockaddr.Parse(c.Address, "use unix:///path/to/socket (Debian: unix:///run/clamav/clamd.ctl) or tcp://host:port")
	if err != nil {
		problems = append(problems, err.Error())
	}
	switch c.Action {
	case "":
		c.Action = ActionReplace
	case ActionReplace, ActionReject, ActionTag:
	default:
		problems = append(problems, fmt.Sprintf("action %q is not one of %s, %s, %s", c.Action, ActionReplace, ActionReject, ActionTag))
	}
	switch {
	case c.MaxStream == 0:
		c.MaxStream = DefaultMaxStream
	case c.MaxStream < 0:
		problems = append(problems, fmt.Sprintf("max_stream %d is negative", c.MaxStream))
	}
	if c.QuarantineDir != "" {
		if err := c.checkQuarantineDir(); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	c.client = clamdClient{network: network, address: address, maxStream: int64(c.MaxStream)}
	return nil
}

// checkQuarantineDir creates a file: permission bits do not tell about
// ACLs, read-only mounts or root.
func (c *Filter) checkQuarantineDir() error {
	dir := c.QuarantineDir
	if !filepath.IsAbs(dir) {
		return fmt.Errorf("quarantine_dir %q must be an absolute path", dir)
	}
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("quarantine_dir: %v (the proxy does not create it: make it, owned by the proxy's user, mode 0700)", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("quarantine_dir %q is not a directory", dir)
	}
	probe, err := os.CreateTemp(dir, ".pop3proxy-probe-*")
	if err != nil {
		return fmt.Errorf("quarantine_dir %q is not writable by the proxy: %v", dir, err)
	}
	probe.Close()
	os.Remove(probe.Name())
	if st.Mode().Perm()&0o007 != 0 {
		c.log.Warn("quarantine_dir is accessible to all users; quarantined mail is private", zap.String("dir", dir),
			zap.Stringer("mode", st.Mode().Perm()))
	}
	return nil
}

func ownFieldsRemoved() []filter.Edit {
	return []filter.Edit{
		filter.Remove(ScannedField),
		filter.Remove(StatusField),
		filter.Remove(NameField),
	}
}

func (c *Filter) Judge(ctx context.Context, m *filter.Message) (filter.Verdict, error) {
	start := time.Now()
	virus, err := c.client.scan(ctx, m.Bytes())
	took := time.Since(start)
	if err != nil {
		return filter.Verdict{}, err
	}
	if virus == "" {
		c.log.Debug("clean", zap.Int("msg", m.Meta.Number), zap.Int("size", m.Len()), zap.Duration("took", took))
		return filter.Verdict{
			Action: filter.Continue,
			Edits:  append(ownFieldsRemoved(), filter.Add(ScannedField, CleanValue)),
		}, nil
	}

	reason := "virus " + virus
	var kept string
	var qerr error
	if c.QuarantineDir != "" && c.Action != ActionTag {
		kept, qerr = c.quarantine(m.Bytes(), time.Now())
	}
	fields := []zap.Field{
		zap.String("virus", virus), zap.String("action", c.Action),
		zap.Int("msg", m.Meta.Number), zap.String("user", m.Meta.User), zap.String("upstream", m.Meta.Upstream),
		zap.Int("size", m.Len()), zap.Duration("took", took),
	}
	if kept != "" {
		fields = append(fields, zap.String("quarantine", kept))
	}
	if qerr != nil {
		c.log.Error("virus found, quarantine failed", append(fields, zap.Error(qerr))...)
		return filter.Verdict{}, fmt.Errorf("virus %s found, but the original could not be quarantined: %w: %w", virus, filter.ErrFailClosed, qerr)
	}
	c.log.Warn("virus found", fields...)

	switch c.Action {
	case ActionReject:
		return filter.Verdict{Action: filter.Reject, Reason: reason}, nil
	case ActionTag:
		return filter.Verdict{
			Action: filter.Continue,
			Reason: reason,
			Edits: append(ownFieldsRemoved(),
				filter.Add(StatusField, "Infected"),
				filter.Add(NameField, virus)),
		}, nil
	}
	return filter.Verdict{
		Action:      filter.Replace,
		Reason:      reason,
		Replacement: virusNotice(m.Bytes(), virus, kept, time.Now()),
	}, nil
}

// quarantine stores msg in QuarantineDir and returns the file's name. No
// partial message ever has a final name.
func (c *Filter) quarantine(msg []byte, now time.Time) (string, error) {
	sum := sha256.Sum256(msg)
	id := hex.EncodeToString(sum[:8])
	suffix := "-" + id + ".eml"
	if entries, err := os.ReadDir(c.QuarantineDir); err == nil {
		for _, e := range entries {
			if strings.HasSuffix(e.Name(), suffix) && e.Type().IsRegular() {
				return e.Name(), nil
			}
		}
	}
	name := now.UTC().Format("20060102T150405Z") + suffix

	f, err := os.CreateTemp(c.QuarantineDir, ".tmp-"+id+"-*")
	if err != nil {
		return "", err
	}
	tmp := f.Name()
	_, err = f.Write(msg)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(c.QuarantineDir, name))
	}
	if err != nil {
		os.Remove(tmp)
		return "", err
	}
	if d, err := os.Open(c.QuarantineDir); err == nil {
		if err := d.Sync(); err != nil {
			c.log.Warn("quarantine: syncing the directory failed; the file may not survive a crash", zap.String("file", name), zap.Error(err))
		}
		d.Close()
	}
	return name, nil
}

// noticeFields are kept in the notice, so that the client lists and
// threads it where the original would be.
var noticeFields = []string{"From", "To", "Cc", "Date", "Subject", "Message-ID"}

// virusNotice builds the message delivered instead of an infected one.
// Only noticeFields are copied, so it cannot carry the virus. kept is the
// quarantine file's name or ""; the path would show the proxy's file
// system layout.
func virusNotice(orig []byte, virus, kept string, now time.Time) []byte {
	var b bytes.Buffer
	b.WriteString(StatusField + ": Infected\r\n")
	b.WriteString(NameField + ": " + virus + "\r\n")

	fields, ok := headerFields(orig)
	has := map[string]bool{}
	for _, f := range fields {
		has[f.name] = true
	}
	if !has["From"] {
		b.WriteString("From: pop3proxy virus filter <postmaster@pop3proxy.invalid>\r\n")
	}
	if !has["Date"] {
		b.WriteString("Date: " + now.Format(time.RFC1123Z) + "\r\n")
	}
	if !has["Subject"] {
		subject := strings.TrimSpace(SubjectPrefix)
		if !ok {
			subject = SubjectPrefix + "(original header unreadable)"
		}
		b.WriteString("Subject: " + subject + "\r\n")
	}
	for _, f := range fields {
		if f.name == "Subject" {
			b.Write(prefixSubject(f.raw))
			continue
		}
		b.Write(f.raw)
	}
	b.WriteString("MIME-Version: 1.0\r\n")
	b.WriteString("Content-Type: text/plain; charset=utf-8\r\n")
	b.WriteString("Content-Transfer-Encoding: 7bit\r\n")
	b.WriteString("\r\n")

	line := func(s string) { b.WriteString(s + "\r\n") }
	line("The virus filter of the POP3 proxy removed this message because")
	line("ClamAV found a virus in it:")
	line("")
	line("    " + virus)
	line("")
	if kept != "" {
		line("The original message was kept in the quarantine directory of the")
		line("proxy as")
		line("")
		line("    " + kept)
		line("")
		line("Give this name to your mail administrator if you need the message.")
	} else {
		line("The original message was not kept.")
	}
	line("")
	if ok {
		line("The sender, recipients, date and subject above are those of the")
		line("original message.")
	} else {
		line("The header of the original message could not be read, so its")
		line("sender, date and subject are not shown.")
	}
	return b.Bytes()
}

type headerField struct {
	name string // as spelled in noticeFields
	raw  []byte
}

func headerFields(msg []byte) ([]headerField, bool) {
	src := bytes.NewReader(msg)
	br := bufio.NewReader(io.LimitReader(src, maxHeader))
	h, err := textproto.ReadHeader(br)
	if err != nil {
		return nil, false
	}
	// ReadHeader takes a header cut off by the limit for a whole one.
	if len(msg)-src.Len()-br.Buffered() >= maxHeader {
		return nil, false
	}
	var fields []headerField
	for it := h.Fields(); it.Next(); {
		for _, name := range noticeFields {
			if !strings.EqualFold(it.Key(), name) {
				continue
			}
			raw, err := it.Raw()
			if err != nil {
				return nil, false
			}
			fields = append(fields, headerField{name: name, raw: raw})
		}
	}
	return fields, true
}

// prefixSubject puts SubjectPrefix in front of a raw Subject field's
// value, keeping the rest of its bytes.
func prefixSubject(raw []byte) []byte {
	colon := bytes.IndexByte(raw, ':')
	start := colon + 1
	for start < len(raw) && (raw[start] == ' ' || raw[start] == '\t') {
		start++
	}
	out := make([]byte, 0, len(raw)+len(SubjectPrefix)+1)
	out = append(out, raw[:colon+1]...)
	out = append(out, ' ')
	out = append(out, SubjectPrefix...)
	return append(out, raw[start:]...)
}

var (
	_ filter.Judge       = (*Filter)(nil)
	_ filter.Provisioner = (*Filter)(nil)
)
