package clamav

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/pop3proxy/pop3proxy/filter"
	"github.com/pop3proxy/pop3proxy/internal/neterr"
	"github.com/pop3proxy/pop3proxy/scanners/internal/daemon"
)

const (
	clamdChunk = 64 << 10

	// clamdMaxReply is far above any real "stream: <name> FOUND".
	clamdMaxReply = 4 << 10

	// clamdMaxName bounds a virus name; official ones are under 100 bytes.
	clamdMaxName = 200
)

// clamdCommand needs the z or n prefix (docs/scanners.md, Commands and framing).
const clamdCommand = "zINSTREAM\x00"

// ErrTooLarge: a message over max_stream or clamd's StreamMaxLength is not
// scanned and never clean. It wraps filter.ErrTooLarge: no retry can make
// it smaller, so the chain applies its oversize policy, not on_error.
var ErrTooLarge error = neterr.WithText("message too large for clamd", filter.ErrTooLarge)

// errClamdNoReply is what clamd does when the stream ends without the
// zero-length chunk (docs/scanners.md, clamd replies).
var errClamdNoReply = errors.New("clamd closed the connection without a reply")

// clamdClient holds only configuration; clamd takes one command a connection.
type clamdClient struct {
	network   string // "unix" or "tcp"
	address   string // socket path or host:port
	maxStream int64
}

// scan returns the virus name, "" for clean; every failure is an error,
// never clean (docs/scanners.md, clamd replies).
func (c *clamdClient) scan(ctx context.Context, msg io.Reader, size int64) (string, error) {
	// Nothing is sent that clamd would refuse or pass unscanned
	// (docs/scanners.md, clamd limits).
	if size > c.maxStream {
		return "", fmt.Errorf("%w: %d bytes, max_stream is %d", ErrTooLarge, size, c.maxStream)
	}
	conn, done, err := daemon.Connect(ctx, c.network, c.address)
	if err != nil {
		return "", c.fail(ctx, "connect", err)
	}
	defer done()

	werr := writeClamdStream(conn, msg, size)
	if daemon.IsReadError(werr) {
		// clamd got no terminator, so it scans nothing and will not answer.
		return "", fmt.Errorf("clamd %s: %w", c.where(), werr)
	}
	// After a failed write the reply, which says why, is still there to
	// read (docs/scanners.md, clamd replies).
	reply, rerr := readClamdReply(conn)
	if rerr != nil {
		if werr != nil {
			return "", c.fail(ctx, "send the message", fmt.Errorf("%w (and no reply: %v)", werr, rerr))
		}
		return "", c.fail(ctx, "read the reply", rerr)
	}
	virus, err := parseClamdReply(reply)
	if err != nil {
		return "", fmt.Errorf("clamd %s: %w", c.where(), err)
	}
	if virus == "" && werr != nil {
		// clamd cannot have scanned a stream that did not arrive whole.
		return "", c.fail(ctx, "send the message", fmt.Errorf("%w (then clamd answered %q)", werr, reply))
	}
	return virus, nil
}

// fail reports the context's end or the connection's deadline (the
// context's) as such, so the chain says "timed out", not a closed socket.
func (c *clamdClient) fail(ctx context.Context, op string, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("clamd %s: %s: %w", c.where(), op, cerr)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("clamd %s: %s: %w", c.where(), op, context.DeadlineExceeded)
	}
	return fmt.Errorf("clamd %s: %s: %w", c.where(), op, neterr.Cause(err))
}

func (c *clamdClient) where() string { return c.network + ":" + c.address }

// writeClamdStream frames msg as docs/scanners.md, Commands and framing,
// says. Each chunk is read straight into the buffer it is sent from, so a
// message costs one chunk of memory; a failure to read msg is a
// *daemon.ReadError, returned before the terminator is sent.
func writeClamdStream(w io.Writer, msg io.Reader, size int64) error {
	first := int(min(size, clamdChunk))
	buf := make([]byte, 0, len(clamdCommand)+4+first+4)
	buf = append(buf, clamdCommand...)
	for left := size; left > 0; {
		n := int(min(left, clamdChunk))
		buf = binary.BigEndian.AppendUint32(buf, uint32(n))
		start := len(buf)
		buf = buf[:start+n]
		if _, err := io.ReadFull(msg, buf[start:]); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return &daemon.ReadError{Err: fmt.Errorf("%d of %d bytes: %w", size-left, size, err)}
		}
		left -= int64(n)
		if left == 0 {
			break
		}
		if _, err := w.Write(buf); err != nil {
			return err
		}
		buf = buf[:0]
	}
	buf = append(buf, 0, 0, 0, 0)
	_, err := w.Write(buf)
	return err
}

// readClamdReply reads one reply up to NUL or LF: "COMMAND READ TIMED OUT"
// ends in LF even after a z command (docs/scanners.md, clamd replies).
func readClamdReply(r io.Reader) (string, error) {
	var reply []byte
	buf := make([]byte, 512)
	for {
		n, err := r.Read(buf)
		reply = append(reply, buf[:n]...)
		if i := bytes.IndexAny(reply, "\x00\n"); i >= 0 {
			return string(reply[:i]), nil
		}
		if len(reply) > clamdMaxReply {
			return "", fmt.Errorf("reply longer than %d bytes without a terminator", clamdMaxReply)
		}
		if err == io.EOF {
			if len(reply) == 0 {
				return "", errClamdNoReply
			}
			return "", fmt.Errorf("connection closed in the middle of the reply %q", reply)
		}
		if err != nil {
			return "", err
		}
	}
}

// parseClamdReply returns the virus name of an infected reply, "" for
// exactly "stream: OK", and an error for everything else.
func parseClamdReply(reply string) (string, error) {
	if reply == "stream: OK" {
		return "", nil
	}
	if rest, ok := strings.CutPrefix(reply, "stream: "); ok {
		if name, ok := strings.CutSuffix(rest, " FOUND"); ok {
			return clamdSafeName(name), nil
		}
	}
	switch {
	case reply == "":
		return "", errors.New("empty reply")
	case strings.Contains(reply, "size limit exceeded"):
		return "", fmt.Errorf("%w: clamd answered %q: its StreamMaxLength is smaller than the message (set max_stream to clamd's StreamMaxLength)", ErrTooLarge, reply)
	case reply == "COMMAND READ TIMED OUT":
		return "", fmt.Errorf("clamd answered %q: the message did not arrive within its ReadTimeout", reply)
	case strings.HasSuffix(reply, " ERROR"):
		return "", fmt.Errorf("clamd answered %q", reply)
	}
	return "", fmt.Errorf("unexpected reply %q", reply)
}

// clamdSafeName makes a virus name from the wire safe for a header field,
// a log line and a client's screen: a CR or LF would inject header lines.
// A FOUND reply with no name is still a virus, "unknown".
func clamdSafeName(name string) string {
	b := []byte(strings.TrimSpace(name))
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = '?'
		}
	}
	if len(b) > clamdMaxName {
		b = append(b[:clamdMaxName-3], "..."...)
	}
	if s := strings.TrimSpace(string(b)); s != "" {
		return s
	}
	return "unknown"
}

// clamdPingCommand and its reply (docs/scanners.md, Commands and framing).
const (
	clamdPingCommand = "zPING\x00"
	clamdPong        = "PONG"
)

func (c *clamdClient) ping(ctx context.Context) error {
	reply, err := c.command(ctx, clamdPingCommand)
	if err != nil {
		return err
	}
	if reply != clamdPong {
		return fmt.Errorf("answered %q instead of %s", reply, clamdPong)
	}
	return nil
}

func (c *clamdClient) command(ctx context.Context, cmd string) (string, error) {
	conn, done, err := daemon.Connect(ctx, c.network, c.address)
	if err != nil {
		return "", daemon.PingFailure(ctx, err)
	}
	defer done()
	if _, err := io.WriteString(conn, cmd); err != nil {
		return "", daemon.PingFailure(ctx, err)
	}
	reply, err := readClamdReply(conn)
	if err != nil {
		return "", daemon.PingFailure(ctx, err)
	}
	return reply, nil
}

// clamdVersionCommand (docs/scanners.md, Commands and framing) is the n
// form: its reply ends in LF, which readClamdReply takes like NUL.
const clamdVersionCommand = "nVERSION\n"

// version returns "ClamAV 1.4.6/27000/<date>", whose database part changes
// with every signature update (missing with only custom signatures).
func (c *clamdClient) version(ctx context.Context) (string, error) {
	reply, err := c.command(ctx, clamdVersionCommand)
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(reply, "ClamAV ") {
		return "", fmt.Errorf("answered %q to VERSION", reply)
	}
	return reply, nil
}
