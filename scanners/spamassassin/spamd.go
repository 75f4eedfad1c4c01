package spamassassin

// The spamd client: one SYMBOLS request per connection, as spamc does.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/pop3proxy/pop3proxy/internal/neterr"
	"github.com/pop3proxy/pop3proxy/scanners/internal/daemon"
)

const (
	// spamdMaxReply is far above a real SYMBOLS reply (under 1 KiB).
	spamdMaxReply = 64 << 10
)

var (
	errSpamdReplyTooLarge = fmt.Errorf("spamd reply larger than %d bytes", spamdMaxReply)
	// errSpamdNoReply also covers a crashed or killed spamd child.
	errSpamdNoReply = errors.New("spamd closed the connection without a reply")
)

// spamdStatusError is a reply whose status code, a sysexits.h code, is not
// 0 (EX_OK), such as "SPAMD/1.0 76 Bad header line: ...".
type spamdStatusError struct {
	Code int
	Text string
}

func (e *spamdStatusError) Error() string {
	name := spamdExitNames[e.Code]
	if name == "" {
		name = "unknown code"
	}
	return fmt.Sprintf("spamd answered %d (%s): %s", e.Code, name, daemon.Quote(e.Text))
}

var spamdExitNames = map[int]string{
	64: "EX_USAGE", 65: "EX_DATAERR", 66: "EX_NOINPUT", 67: "EX_NOUSER",
	68: "EX_NOHOST", 69: "EX_UNAVAILABLE", 70: "EX_SOFTWARE", 71: "EX_OSERR",
	72: "EX_OSFILE", 73: "EX_CANTCREAT", 74: "EX_IOERR", 75: "EX_TEMPFAIL",
	76: "EX_PROTOCOL", 77: "EX_NOPERM", 78: "EX_CONFIG", 79: "EX_TIMEOUT",
}

// spamdClient holds no connection and is safe for concurrent use.
type spamdClient struct {
	network string
	address string
	user    string // optional User header
}

type spamdResult struct {
	Spam      bool
	Score     float64
	Threshold float64
	Symbols   []string // the rules that hit, each a valid rule name
	Dropped   []string // quoted entries that were not rule names
}

// spamdRequest returns the request head: "Content-length" with a lower-case
// l, and CRLF line endings (docs/scanners.md, spamd requests).
func spamdRequest(verb string, msgLen int64, user string) []byte {
	b := make([]byte, 0, 64+len(user))
	b = append(b, verb...)
	b = append(b, " SPAMC/1.5\r\nContent-length: "...)
	b = strconv.AppendInt(b, msgLen, 10)
	b = append(b, "\r\n"...)
	if user != "" {
		b = append(b, "User: "...)
		b = append(b, user...)
		b = append(b, "\r\n"...)
	}
	return append(b, "\r\n"...)
}

// spamdSendBuffer holds the request head and the start of the message,
// so that a small message goes out in one write.
const spamdSendBuffer = 32 << 10

// symbols uses SYMBOLS, which returns the verdict and the rules that hit
// without rewriting the message (docs/scanners.md, spamd replies); CHECK
// lacks the rule names. msg is streamed, never held whole.
func (c *spamdClient) symbols(ctx context.Context, msg io.Reader, size int64) (spamdResult, error) {
	if err := ctx.Err(); err != nil {
		return spamdResult{}, fmt.Errorf("spamd %s: %w", c.address, err)
	}
	conn, done, err := daemon.Connect(ctx, c.network, c.address)
	if err != nil {
		return spamdResult{}, c.fail(ctx, "connect", err)
	}
	defer done()

	// Half-close as well (docs/scanners.md, spamd requests).
	werr := writeSpamdRequest(conn, spamdRequest("SYMBOLS", size, c.user), msg, size)
	if daemon.IsReadError(werr) {
		// spamd got fewer bytes than Content-length announced: no reply
		// can be about this message.
		return spamdResult{}, fmt.Errorf("spamd %s: %w", c.address, werr)
	}
	var cwerr error
	if werr == nil {
		if cw, ok := conn.(interface{ CloseWrite() error }); ok {
			cwerr = cw.CloseWrite()
		}
	}

	// Read the reply even after a failed write: spamd may have rejected
	// the request and closed, and its reply says why.
	reply, rerr := readSpamdReply(conn)
	if rerr != nil {
		var se *spamdStatusError
		switch {
		case errors.As(rerr, &se):
		case werr != nil:
			return spamdResult{}, c.fail(ctx, "send request", werr)
		case cwerr != nil:
			return spamdResult{}, c.fail(ctx, "half-close", cwerr)
		}
		return spamdResult{}, c.fail(ctx, "read reply", rerr)
	}
	if werr != nil {
		// An EX_OK reply to a request not fully sent cannot be about this
		// message. A failed half-close does not matter once spamd answered.
		return spamdResult{}, c.fail(ctx, "send request", werr)
	}
	res, err := parseSpamdSymbols(reply)
	if err != nil {
		return spamdResult{}, fmt.Errorf("spamd %s: %w", c.address, err)
	}
	return res, nil
}

// writeSpamdRequest: a failure to read msg is a *daemon.ReadError.
func writeSpamdRequest(w io.Writer, head []byte, msg io.Reader, size int64) error {
	bw := bufio.NewWriterSize(w, spamdSendBuffer)
	bw.Write(head)
	src := &readErrorReader{r: io.LimitReader(msg, size)}
	n, err := io.Copy(bw, src)
	if src.err != nil {
		return &daemon.ReadError{Err: fmt.Errorf("%d of %d bytes: %w", n, size, src.err)}
	}
	if err == nil && n < size {
		return &daemon.ReadError{Err: fmt.Errorf("%d of %d bytes: %w", n, size, io.ErrUnexpectedEOF)}
	}
	if err != nil {
		return err
	}
	return bw.Flush()
}

// readErrorReader remembers a read error, which io.Copy does not tell
// apart from a write error.
type readErrorReader struct {
	r   io.Reader
	err error
}

func (r *readErrorReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

// fail wraps the context's error when it caused err, so that the chain
// reports a timeout as "timed out".
func (c *spamdClient) fail(ctx context.Context, op string, err error) error {
	cerr := ctx.Err()
	if dl, ok := ctx.Deadline(); ok && cerr == nil && errors.Is(err, os.ErrDeadlineExceeded) && !time.Now().Before(dl) {
		// The connection's deadline is the context's, whose timer may not
		// have fired yet.
		cerr = context.DeadlineExceeded
	}
	if cerr != nil {
		return fmt.Errorf("spamd %s: %s: %w (%v)", c.address, op, cerr, neterr.Cause(err))
	}
	return fmt.Errorf("spamd %s: %s: %w", c.address, op, neterr.Cause(err))
}

// spamdReply is a parsed reply with status 0.
type spamdReply struct {
	Version string
	Text    string            // "EX_OK", "PONG"
	Headers map[string]string // lower-case names
	Body    []byte
}

// readSpamdReply reads one reply: status line, headers, and a body of
// Content-length bytes (without one, up to EOF). It does not wait for
// spamd to close. Line endings are read leniently, structure strictly.
func readSpamdReply(r io.Reader) (spamdReply, error) {
	br := bufio.NewReader(&spamdCapReader{r: r, n: spamdMaxReply})

	line, err := readSpamdLine(br)
	if errors.Is(err, io.EOF) {
		return spamdReply{}, errSpamdNoReply
	}
	if err != nil {
		return spamdReply{}, err
	}
	var rep spamdReply
	proto, rest, _ := strings.Cut(line, " ")
	version, isSpamd := strings.CutPrefix(proto, "SPAMD/")
	codeText, text, _ := strings.Cut(rest, " ")
	code, cerr := strconv.Atoi(codeText)
	if !isSpamd || !spamdValidVersion(version) || cerr != nil || code < 0 {
		return spamdReply{}, fmt.Errorf("malformed spamd status line %s", daemon.Quote(line))
	}
	if code != 0 {
		return spamdReply{}, &spamdStatusError{Code: code, Text: text}
	}
	rep.Version, rep.Text = version, text

	rep.Headers = map[string]string{}
	for {
		line, err := readSpamdLine(br)
		if errors.Is(err, io.EOF) {
			return spamdReply{}, errors.New("spamd reply cut short in the headers")
		}
		if err != nil {
			return spamdReply{}, err
		}
		if line == "" {
			break
		}
		name, value, ok := strings.Cut(line, ":")
		name = strings.ToLower(strings.TrimSpace(name))
		if !ok || name == "" {
			return spamdReply{}, fmt.Errorf("malformed spamd reply header %s", daemon.Quote(line))
		}
		if _, dup := rep.Headers[name]; dup {
			return spamdReply{}, fmt.Errorf("spamd reply repeats header %s", daemon.Quote(name))
		}
		rep.Headers[name] = strings.TrimSpace(value)
	}

	cl, hasLen := rep.Headers["content-length"]
	if !hasLen {
		rep.Body, err = io.ReadAll(br)
		return rep, err
	}
	n, err := strconv.Atoi(cl)
	if err != nil || n < 0 {
		return spamdReply{}, fmt.Errorf("malformed spamd Content-length %s", daemon.Quote(cl))
	}
	if n > spamdMaxReply {
		return spamdReply{}, errSpamdReplyTooLarge
	}
	rep.Body = make([]byte, n)
	if _, err := io.ReadFull(br, rep.Body); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return spamdReply{}, fmt.Errorf("spamd reply cut short in the body (Content-length %d)", n)
		}
		return spamdReply{}, err
	}
	return rep, nil
}

// readSpamdLine reads one line without its CRLF or LF. io.EOF means the
// connection ended before the line began.
func readSpamdLine(br *bufio.Reader) (string, error) {
	line, err := br.ReadString('\n')
	if err != nil {
		if errors.Is(err, io.EOF) {
			if line == "" {
				return "", io.EOF
			}
			return "", fmt.Errorf("spamd reply cut short after %s", daemon.Quote(line))
		}
		return "", err
	}
	line = strings.TrimSuffix(line, "\n")
	return strings.TrimSuffix(line, "\r"), nil
}

func spamdValidVersion(v string) bool {
	major, minor, ok := strings.Cut(v, ".")
	return ok && spamdDigits(major) && spamdDigits(minor)
}

func spamdDigits(s string) bool {
	if s == "" || len(s) > 4 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func parseSpamdSymbols(rep spamdReply) (spamdResult, error) {
	spam, ok := rep.Headers["spam"]
	if !ok {
		return spamdResult{}, errors.New("spamd reply has no Spam header")
	}
	res, err := parseSpamdSpamHeader(spam)
	if err != nil {
		return spamdResult{}, err
	}
	res.Symbols, res.Dropped = sanitiseSpamdSymbols(string(rep.Body))
	return res, nil
}

// parseSpamdSpamHeader parses "True ; 1000.0 / 5.0". Yes and No are
// accepted too (docs/scanners.md, spamd replies), case-insensitively.
func parseSpamdSpamHeader(v string) (spamdResult, error) {
	bad := func(why string) (spamdResult, error) {
		return spamdResult{}, fmt.Errorf("malformed spamd Spam header %s: %s", daemon.Quote(v), why)
	}
	flag, scores, ok := strings.Cut(v, ";")
	if !ok {
		return bad("no ';'")
	}
	var res spamdResult
	switch strings.ToLower(strings.TrimSpace(flag)) {
	case "true", "yes":
		res.Spam = true
	case "false", "no":
	default:
		return bad("flag is not True, False, Yes or No")
	}
	score, threshold, ok := strings.Cut(scores, "/")
	if !ok {
		return bad("no '/'")
	}
	var err error
	if res.Score, err = spamdFloat(score); err != nil {
		return bad("score: " + err.Error())
	}
	if res.Threshold, err = spamdFloat(threshold); err != nil {
		return bad("threshold: " + err.Error())
	}
	return res, nil
}

func spamdFloat(s string) (float64, error) {
	s = strings.TrimSpace(s)
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a number", s)
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("%q is not a finite number", s)
	}
	return f, nil
}

const spamdMaxSymbol = 128

// sanitiseSpamdSymbols keeps only rule names (letters, digits, underscores,
// as SpamAssassin requires) of "GTUBE,MSGID_SHORT": a hostile spamd's CR or
// LF must not reach X-Spam-Status. Other entries are dropped and reported.
func sanitiseSpamdSymbols(body string) (symbols, dropped []string) {
	for _, s := range strings.Split(body, ",") {
		s = strings.TrimSpace(s)
		switch {
		case s == "":
		case spamdValidSymbol(s):
			symbols = append(symbols, s)
		default:
			dropped = append(dropped, daemon.Quote(s))
		}
	}
	return symbols, dropped
}

func spamdValidSymbol(s string) bool {
	if len(s) > spamdMaxSymbol {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// spamdCapReader fails with errSpamdReplyTooLarge past n bytes.
type spamdCapReader struct {
	r io.Reader
	n int64
}

func (c *spamdCapReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if c.n <= 0 {
		var one [1]byte
		n, err := c.r.Read(one[:])
		if n > 0 {
			return 0, errSpamdReplyTooLarge
		}
		return 0, err
	}
	if int64(len(p)) > c.n {
		p = p[:c.n]
	}
	n, err := c.r.Read(p)
	c.n -= int64(n)
	return n, err
}

func (c *spamdClient) url() string { return c.network + "://" + c.address }

// ping expects "SPAMD/<version> 0 PONG" (docs/scanners.md, spamd replies).
func (c *spamdClient) ping(ctx context.Context) error {
	conn, done, err := daemon.Connect(ctx, c.network, c.address)
	if err != nil {
		return daemon.PingFailure(ctx, err)
	}
	defer done()
	if _, err := io.WriteString(conn, "PING SPAMC/1.5\r\n\r\n"); err != nil {
		return daemon.PingFailure(ctx, err)
	}
	line, err := readSpamdLine(bufio.NewReader(io.LimitReader(conn, 512)))
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = errSpamdNoReply
		}
		return daemon.PingFailure(ctx, err)
	}
	f := strings.Fields(line)
	if len(f) != 3 || !strings.HasPrefix(f[0], "SPAMD/") || f[1] != "0" || f[2] != "PONG" {
		return fmt.Errorf("answered %s instead of PONG", daemon.Quote(line))
	}
	return nil
}
