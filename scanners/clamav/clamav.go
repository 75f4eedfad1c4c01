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
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/emersion/go-message/textproto"
	"go.uber.org/zap"

	"github.com/pop3proxy/pop3proxy/filter"
	"github.com/pop3proxy/pop3proxy/scanners/internal/sockaddr"
	"github.com/pop3proxy/pop3proxy/yamlconf"
)

func init() {
	filter.Register(filter.PluginInfo{
		Type:          "clamav",
		New:           func() filter.Plugin { return new(Filter) },
		MaxConcurrent: DefaultMaxConcurrent,
	})
}

// DefaultMaxConcurrent is clamd's built-in MaxThreads (docs/scanners.md,
// clamd limits): more scans only wait in clamd's queue, each holding a
// connection, and past MaxQueue are refused.
const DefaultMaxConcurrent = 10

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

// DefaultQuarantineMaxBytes is quarantine_max_bytes's default.
const DefaultQuarantineMaxBytes yamlconf.ByteSize = 1 << 30

// maxHeader bounds the notice's header read; textproto.ReadHeader has none.
const maxHeader = 1 << 20

// maxNoticeField fits a sender, a subject or a few recipients, no more.
const maxNoticeField = 200

// Filter is the "clamav" filter. A clean message gets CleanValue in
// X-Virus-Scanned. An infected one is replaced by a notice naming the
// virus and the quarantine file, with the first From, To, Cc, Date,
// Subject (behind SubjectPrefix) and Message-ID of the original that are
// printable and at most 200 octets unfolded; if clamd finds anything in
// it or cannot scan it, one that copies nothing is delivered instead.
//
//	filters:
//	- type: clamav
//	  address: unix:///run/clamav/clamd.ctl   # or tcp://host:3310
//	  timeout: 30s
//	  on_error: tempfail
//	  action: replace          # replace | reject | tag
//	  quarantine_dir: ""       # when set, the original infected message is kept here
//	  quarantine_max_bytes: 1GiB  # the most quarantine_dir may hold
//	  max_stream: 25MiB        # clamd's StreamMaxLength; larger messages fall under the oversize policy
//	  max_concurrent: 10       # clamd's MaxThreads; more scans wait for a turn
//
// Set max_concurrent (see filter.PluginInfo; 0: no limit) to clamd.conf's
// MaxThreads (Debian: 12) less what its other clients use.
type Filter struct {
	// Address is clamd's socket, unix:///path or tcp://host:port. Required.
	Address string `yaml:"address"`
	// Action on a virus: "replace" (default) delivers the notice instead;
	// "reject" answers the RETR with -ERR, leaving the message on the
	// server; "tag" adds X-Virus-Status: Infected and X-Virus-Name.
	Action string `yaml:"action"`
	// QuarantineDir, if set, is an existing absolute directory (make it 0700)
	// keeping each original replaced or rejected for a virus once per content
	// as <UTC time>-<16 hex of its SHA-256>.eml, mode 0600. If storing fails,
	// the message is not delivered, whatever on_error says.
	QuarantineDir string `yaml:"quarantine_dir"`
	// QuarantineMaxBytes bounds QuarantineDir's regular files, measured at
	// start and before a refusal (so removed files count at once). A message
	// that would pass it is neither stored nor delivered (-ERR [SYS/TEMP],
	// whatever on_error says), logged at most once a minute. Default 1GiB;
	// 0 is refused: to keep no originals, leave quarantine_dir empty.
	QuarantineMaxBytes *yamlconf.ByteSize `yaml:"quarantine_max_bytes"`
	// MaxStreamSize (key max_stream, default 25MiB) is the largest message
	// sent to clamd: set clamd's StreamMaxLength to it and MaxFileSize at
	// least as large, or clamd answers "stream: OK" without scanning
	// (docs/scanners.md, clamd limits).
	MaxStreamSize yamlconf.ByteSize `yaml:"max_stream"`

	log    *zap.Logger
	client clamdClient

	// storing holds one token: one message is stored at a time, so that
	// the duplicate check and stored see every file. A channel, unlike a
	// mutex, lets a Judge whose time is up stop waiting.
	storing chan struct{}
	stored  int64 // bytes in QuarantineDir; guarded by storing
	full    *refusalLog

	gen *generationMemo // made by Provision
}

// generationInterval: a verdict cache asks for every message, and clamd
// reloads its signatures at most every few minutes (freshclam's checks).
var generationInterval = 5 * time.Second

// generationMemo asks one VERSION at a time; the others wait for its answer.
type generationMemo struct {
	mu  sync.Mutex
	at  time.Time
	val string
	err error
}

// Generation implements filter.Generational with VERSION, whose signature
// database version (docs/scanners.md, Commands and framing) bars stale verdicts.
func (c *Filter) Generation(ctx context.Context) (string, error) {
	if c.gen == nil {
		return "", errors.New("clamav filter used before Provision")
	}
	c.gen.mu.Lock()
	defer c.gen.mu.Unlock()
	if !c.gen.at.IsZero() && time.Since(c.gen.at) < generationInterval {
		return c.gen.val, c.gen.err
	}
	ctx, cancel := context.WithTimeout(ctx, filter.GenerationTimeout)
	defer cancel()
	v, err := c.client.version(ctx)
	if err != nil {
		err = &filter.PingError{Daemon: "clamd", Address: c.Address, Err: err}
	}
	c.gen.val, c.gen.err, c.gen.at = v, err, time.Now()
	return v, err
}

// Provision does not contact clamd, which may start after the proxy.
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
	case c.MaxStreamSize == 0:
		c.MaxStreamSize = DefaultMaxStream
	case c.MaxStreamSize < 0:
		problems = append(problems, fmt.Sprintf("max_stream %d is negative", c.MaxStreamSize))
	}
	switch {
	case c.QuarantineMaxBytes == nil:
		limit := DefaultQuarantineMaxBytes
		c.QuarantineMaxBytes = &limit
	case *c.QuarantineMaxBytes <= 0:
		problems = append(problems, fmt.Sprintf("quarantine_max_bytes %d: must be more than 0 (to keep no originals, leave quarantine_dir empty)", *c.QuarantineMaxBytes))
	}
	if c.QuarantineDir != "" {
		if err := c.checkQuarantineDir(); err != nil {
			problems = append(problems, err.Error())
		} else if c.stored, err = dirBytes(c.QuarantineDir); err != nil {
			problems = append(problems, fmt.Sprintf("quarantine_dir: measuring what it holds: %v", err))
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	if limit := int64(*c.QuarantineMaxBytes); c.QuarantineDir != "" && c.stored >= limit {
		c.log.Warn("quarantine_dir already holds quarantine_max_bytes: infected messages will be left on the server until you raise quarantine_max_bytes or remove files",
			zap.String("dir", c.QuarantineDir), zap.Int64("stored", c.stored), zap.Int64("quarantine_max_bytes", limit))
	}
	c.client = clamdClient{network: network, address: address, maxStream: int64(c.MaxStreamSize)}
	c.storing = make(chan struct{}, 1)
	c.full = new(refusalLog)
	c.gen = new(generationMemo)
	return nil
}

// Ping implements filter.Pinger: clamd answers zPING with PONG.
func (c *Filter) Ping(ctx context.Context) error {
	if err := c.client.ping(ctx); err != nil {
		return &filter.PingError{Daemon: "clamd", Address: c.Address, Err: err}
	}
	return nil
}

// MaxStream implements filter.StreamLimiter: max_size may not exceed it.
func (c *Filter) MaxStream() (int64, string) { return int64(c.MaxStreamSize), "max_stream" }

func dirBytes(dir string) (int64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var total int64
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		info, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed since ReadDir
		}
		if err != nil {
			return 0, err
		}
		total += info.Size()
	}
	return total, nil
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
	virus, err := c.client.scan(ctx, m.Open(), m.Size())
	took := time.Since(start)
	if err != nil {
		return filter.Verdict{}, err
	}
	if virus == "" {
		if ce := c.log.Check(zap.DebugLevel, "clean"); ce != nil {
			ce.Write(append(m.Meta.LogFields(), zap.Int64("size", m.Size()), zap.Duration("took", took))...)
		}
		return filter.Verdict{
			Action: filter.Continue,
			Edits:  append(ownFieldsRemoved(), filter.Add(ScannedField, CleanValue)),
		}, nil
	}

	reason := "virus " + virus
	var kept string
	var qerr error
	if c.QuarantineDir != "" && c.Action != ActionTag {
		kept, qerr = c.quarantine(ctx, m, time.Now())
	}
	fields := append(m.Meta.LogFields(),
		zap.String("virus", virus), zap.String("action", c.Action),
		zap.Int64("size", m.Size()), zap.Duration("took", took),
	)
	if kept != "" {
		fields = append(fields, zap.String("quarantine", kept))
	}
	if qerr != nil {
		var full *quarantineFullError
		if errors.As(qerr, &full) {
			// A hostile upstream can cause one refusal per RETR, each
			// logged by the chain; this only has to reach the administrator.
			if n, ok := c.full.note(time.Now()); ok {
				c.log.Error("quarantine full: infected messages are left on the server until you raise quarantine_max_bytes or remove files from quarantine_dir",
					zap.String("dir", c.QuarantineDir), zap.Int64("stored", full.stored), zap.Int64("size", full.size),
					zap.Int64("quarantine_max_bytes", full.limit), zap.Int("refused", n))
			}
		} else {
			c.log.Error("virus found, quarantine failed", append(fields, zap.Error(qerr))...)
		}
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
		Replacement: c.notice(ctx, m, virus, kept, time.Now()),
	}, nil
}

// notice copies m's fields only if clamd finds the result clean: fields a
// client shows can carry a virus (EICAR is printable text), and what
// replaces an infected message must be clean.
func (c *Filter) notice(ctx context.Context, m *filter.Message, virus, kept string, now time.Time) []byte {
	full := virusNotice(m.Open(), virus, kept, now)
	found, err := c.client.scan(ctx, bytes.NewReader(full), int64(len(full)))
	if err == nil && found == "" {
		return full
	}
	fields := append(m.Meta.LogFields(), zap.String("virus", virus))
	if err != nil {
		c.log.Warn("the notice could not be scanned; delivering a minimal notice without the original's header fields", append(fields, zap.Error(err))...)
	} else {
		c.log.Warn("clamd found a virus in the notice built from the original's header fields; delivering a minimal notice without them", append(fields, zap.String("notice_virus", found))...)
	}
	return buildNotice(nil, noticeHeaderWithheld, virus, kept, now)
}

type quarantineFullError struct {
	stored, limit, size int64
}

func (e *quarantineFullError) Error() string {
	return fmt.Sprintf("quarantine_dir holds %d bytes; storing %d more would pass quarantine_max_bytes (%d)", e.stored, e.size, e.limit)
}

// quarantine returns the file's name; no partial message ever has a final
// name, and m is read twice (hash, copy) rather than held in memory.
func (c *Filter) quarantine(ctx context.Context, m *filter.Message, now time.Time) (string, error) {
	select {
	case c.storing <- struct{}{}:
	case <-ctx.Done():
		return "", fmt.Errorf("waiting for another message to be stored: %w", ctx.Err())
	}
	defer func() { <-c.storing }()

	h := sha256.New()
	if _, err := io.Copy(h, m.Open()); err != nil {
		return "", fmt.Errorf("reading the message: %w", err)
	}
	id := hex.EncodeToString(h.Sum(nil)[:8])
	suffix := "-" + id + ".eml"
	if entries, err := os.ReadDir(c.QuarantineDir); err == nil {
		for _, e := range entries {
			if strings.HasSuffix(e.Name(), suffix) && e.Type().IsRegular() {
				return e.Name(), nil
			}
		}
	}
	limit, size := int64(*c.QuarantineMaxBytes), m.Size()
	if c.stored+size > limit {
		if measured, err := dirBytes(c.QuarantineDir); err == nil {
			c.stored = measured
		}
		if c.stored+size > limit {
			return "", &quarantineFullError{stored: c.stored, limit: limit, size: size}
		}
	}
	name := now.UTC().Format("20060102T150405Z") + suffix

	f, err := os.CreateTemp(c.QuarantineDir, ".tmp-"+id+"-*")
	if err != nil {
		return "", err
	}
	tmp := f.Name()
	n, err := io.Copy(f, m.Open())
	if err == nil && n != size {
		err = fmt.Errorf("copied %d of %d bytes", n, size)
	}
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
	c.stored += size
	if d, err := os.Open(c.QuarantineDir); err == nil {
		if err := d.Sync(); err != nil {
			c.log.Warn("quarantine: syncing the directory failed; the file may not survive a crash", append(m.Meta.LogFields(), zap.String("file", name), zap.Error(err))...)
		}
		d.Close()
	}
	return name, nil
}

// refusalLog lets one refusal a minute through, counting the others.
type refusalLog struct {
	mu    sync.Mutex
	last  time.Time
	count int
}

func (r *refusalLog) note(now time.Time) (int, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.count++
	if !r.last.IsZero() && now.Sub(r.last) < time.Minute {
		return 0, false
	}
	n := r.count
	r.last, r.count = now, 0
	return n, true
}

// noticeFields let the client list and thread the notice as the original.
var noticeFields = []string{"From", "To", "Cc", "Date", "Subject", "Message-ID"}

// noticeHeader says what the notice shows of the original's header.
type noticeHeader int

const (
	noticeHeaderCopied   noticeHeader = iota // every field of noticeFields there was
	noticeHeaderPartly                       // some left out as unsafe
	noticeHeaderUnread                       // the header did not parse
	noticeHeaderWithheld                     // nothing: the notice with fields was not clean
)

// virusNotice: kept is the quarantine file's name, not its path, which
// would show the proxy's file system layout.
func virusNotice(orig io.Reader, virus, kept string, now time.Time) []byte {
	fields, ok := headerFields(orig)
	if !ok {
		return buildNotice(nil, noticeHeaderUnread, virus, kept, now)
	}
	state := noticeHeaderCopied
	var safe []headerField
	seen := map[string]bool{}
	for _, f := range fields {
		if seen[f.name] {
			continue // RFC 5322 §3.6 allows one of each
		}
		seen[f.name] = true
		if !safeNoticeField(f.raw) {
			state = noticeHeaderPartly
			continue
		}
		safe = append(safe, f)
	}
	return buildNotice(safe, state, virus, kept, now)
}

func buildNotice(fields []headerField, state noticeHeader, virus, kept string, now time.Time) []byte {
	var b bytes.Buffer
	b.WriteString(StatusField + ": Infected\r\n")
	b.WriteString(NameField + ": " + virus + "\r\n")

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
		switch state {
		case noticeHeaderPartly:
			subject = SubjectPrefix + "(original subject not shown)"
		case noticeHeaderUnread:
			subject = SubjectPrefix + "(original header unreadable)"
		case noticeHeaderWithheld:
			subject = SubjectPrefix + "(original header not shown)"
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
	switch state {
	case noticeHeaderCopied:
		line("The sender, recipients, date and subject above are those of the")
		line("original message.")
	case noticeHeaderPartly:
		line("The sender, recipients, date and subject above are those of the")
		line("original message, except for fields that were left out because")
		line("they were too long or held characters that cannot be shown safely.")
	case noticeHeaderUnread:
		line("The header of the original message could not be read, so its")
		line("sender, date and subject are not shown.")
	case noticeHeaderWithheld:
		line("The header of the original message could not be shown safely, so")
		line("its sender, recipients, date and subject are not shown.")
	}
	return b.Bytes()
}

// safeNoticeField accepts a raw field (CRLF line ends) of printable ASCII
// or UTF-8 (RFC 6532) and white space, without control or format
// characters (a bare CR, NUL, a bidirectional override).
func safeNoticeField(raw []byte) bool {
	unfolded := bytes.ReplaceAll(bytes.TrimSuffix(raw, []byte("\r\n")), []byte("\r\n"), nil)
	if len(unfolded) > maxNoticeField || !utf8.Valid(unfolded) {
		return false
	}
	for _, r := range string(unfolded) {
		if r != '\t' && !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

type headerField struct {
	name string // as spelled in noticeFields
	raw  []byte
}

func headerFields(msg io.Reader) ([]headerField, bool) {
	src := &io.LimitedReader{R: msg, N: maxHeader}
	br := bufio.NewReader(src)
	h, err := textproto.ReadHeader(br)
	if err != nil {
		return nil, false
	}
	// ReadHeader takes a header cut off by the limit for a whole one.
	if maxHeader-src.N-int64(br.Buffered()) >= maxHeader {
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
	_ filter.Judge         = (*Filter)(nil)
	_ filter.Provisioner   = (*Filter)(nil)
	_ filter.StreamLimiter = (*Filter)(nil)
	_ filter.Pinger        = (*Filter)(nil)
)
