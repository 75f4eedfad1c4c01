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

// What a virus hit does (the action key).
const (
	ActionReplace = "replace"
	ActionReject  = "reject"
	ActionTag     = "tag"
)

// The header fields the plugin sets. Sender-supplied fields of these names
// are removed first, so that a message cannot arrive claiming to be clean;
// other X-Virus-* fields (an upstream scanner's) are left as they are.
const (
	ScannedField = "X-Virus-Scanned"
	StatusField  = "X-Virus-Status"
	NameField    = "X-Virus-Name"
)

// CleanValue is the X-Virus-Scanned value of a clean message.
const CleanValue = "clean (ClamAV via pop3proxy)"

// SubjectPrefix starts the Subject of a virus notice, so that the
// notice stands out in the client's message list.
const SubjectPrefix = "[VIRUS REMOVED] "

// DefaultMaxStream is max_stream's default: Debian's StreamMaxLength
// and MaxFileSize (protocols.md §4.3).
const DefaultMaxStream yamlconf.ByteSize = 25 << 20

// maxHeader bounds the header read to build a notice; go-message's
// ReadHeader has no limit of its own (protocols.md §9).
const maxHeader = 1 << 20

// Filter is the "clamav" filter: it scans every message with clamd's
// INSTREAM command and, on a virus, replaces the message with a notice,
// rejects the RETR, or tags the message, as Action says. A clamd failure
// (unreachable, timeout, ERROR reply, a message larger than MaxStream) is
// an error, to which the chain applies the filter's on_error policy.
//
// A clean message gets "X-Virus-Scanned: clean (ClamAV via pop3proxy)" at
// the top of its header. X-Virus-Scanned, X-Virus-Status and X-Virus-Name
// fields that come with a message are removed whenever the message is
// delivered, so that a sender cannot forge them. The notice that replaces
// an infected message is a short text/plain message with the original's
// From, To, Cc, Date, Subject (behind "[VIRUS REMOVED] ") and Message-ID,
// byte for byte; it names the virus and the quarantine file.
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
	// Address is clamd's socket: unix:///path or tcp://host:port.
	// Required.
	Address string `yaml:"address"`
	// Action is what a virus hit does: "replace" (default) delivers a
	// short text notice instead of the message; "reject" answers the RETR
	// with -ERR and leaves the message on the server; "tag" delivers the
	// message with X-Virus-Status: Infected and X-Virus-Name.
	Action string `yaml:"action"`
	// QuarantineDir, when set, is an existing directory, writable by the
	// proxy, where the original of every message replaced or rejected for
	// a virus is stored before the verdict is returned, as
	// <UTC time>-<first 16 hex digits of its SHA-256>.eml, mode 0600. The
	// proxy does not create it: its owner and mode are the administrator's
	// decision (mail is private; 0700 is right). A message already there,
	// by that hash, is not stored twice: a rejected message is retried by
	// the client at every poll. A failure to store is an error, not a
	// verdict; note that with on_error: pass this delivers the infected
	// original, marked unscanned.
	QuarantineDir string `yaml:"quarantine_dir"`
	// MaxStream is the largest message sent to clamd; a larger one is an
	// error (ErrTooLarge), never clean. It should equal clamd's
	// StreamMaxLength, and clamd's MaxFileSize should be at least as
	// large, because clamd answers "stream: OK" without scanning a stream
	// above MaxFileSize (protocols.md item 19). Default 25MiB, Debian's
	// setting of both.
	MaxStream yamlconf.ByteSize `yaml:"max_stream"`

	log    *zap.Logger
	client clamdClient
}

// Provision checks the configuration. The socket itself is not tried:
// clamd may start after the proxy, and a scan that cannot connect is an
// error handled by on_error.
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

// checkQuarantineDir requires an existing directory in which the proxy
// can create files, found out by creating one: permission bits do not
// tell about ACLs, read-only mounts or root.
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

// ownFieldsRemoved removes the fields the plugin sets, sender-supplied
// or left by an earlier pass, before it adds its own.
func ownFieldsRemoved() []filter.Edit {
	return []filter.Edit{
		filter.Remove(ScannedField),
		filter.Remove(StatusField),
		filter.Remove(NameField),
	}
}

// Judge scans the message and returns the verdict that Action asks for.
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
		// The chain logs the returned error too, with the on_error policy
		// it applies; this line keeps the virus name next to it.
		c.log.Error("virus found, quarantine failed", append(fields, zap.Error(qerr))...)
		// The message is known to be infected: whatever on_error says, it
		// must not be delivered, so it stays upstream until the quarantine
		// works again.
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

// quarantine stores msg in QuarantineDir and returns the file's name. The
// file is written under a temporary name in the same directory, synced and
// renamed, so the directory never holds a partial message under a final
// name, and the rename is synced by syncing the directory.
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

	// CreateTemp makes the file with mode 0600.
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

// noticeFields are the fields of the original that the notice keeps,
// so that the client lists it where the original would be, with the same
// sender, subject and date, and threads it by the same Message-ID.
var noticeFields = []string{"From", "To", "Cc", "Date", "Subject", "Message-ID"}

// virusNotice builds the message delivered instead of an infected one: a
// short text/plain notice, 7-bit, CRLF, with the original's From, To, Cc,
// Date, Subject and Message-ID fields copied byte for byte (folding and
// encoded words included; the Subject gets ClamAVSubjectPrefix in front),
// and X-Virus-Status and X-Virus-Name at the top. Nothing else of the
// original is copied, so the notice cannot carry the virus. kept is the
// quarantine file's name, "" if the original was not kept; the notice gives
// the name, not the path, which would show the proxy's file system layout.
// A header that does not parse gets placeholders.
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
	name string // one of clamavNoticeFields, as spelled there
	raw  []byte // the field as in the original, CRLF-terminated
}

// headerFields returns the original's fields that the notice keeps,
// in their order, and whether the header could be read.
func headerFields(msg []byte) ([]headerField, bool) {
	src := bytes.NewReader(msg)
	br := bufio.NewReader(io.LimitReader(src, maxHeader))
	h, err := textproto.ReadHeader(br)
	if err != nil {
		return nil, false
	}
	// ReadHeader takes a header cut off by the limit for a whole one,
	// with its last field truncated.
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

// prefixSubject puts ClamAVSubjectPrefix in front of a raw Subject
// field's value, keeping the field name's spelling and the rest of the
// bytes, folding included.
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
