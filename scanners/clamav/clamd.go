package clamav

// The clamd wire client of the ClamAV plugin: one INSTREAM scan per
// connection. The protocol and the replies observed from clamd 1.4.6 are in
// protocols.md §4.1–§4.2 and items 18–19; man clamd is the upstream
// description. scanners/doc.go says why this is not an existing Go client.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"
)

const (
	// clamdChunk is the largest INSTREAM chunk sent. clamd reads chunks of
	// any size up to StreamMaxLength; 64 KiB keeps the copy per chunk small.
	clamdChunk = 64 << 10

	// clamdMaxReply bounds a reply. "stream: <name> FOUND" is well under
	// 300 bytes for any real signature name; a peer that sends more
	// without a terminator is not clamd.
	clamdMaxReply = 4 << 10

	// clamdFallbackTimeout bounds a scan whose context has no deadline.
	// The filter chain always sets one (the filter's timeout); this only
	// keeps a caller that forgets from waiting forever on a stuck clamd.
	clamdFallbackTimeout = 30 * time.Second

	// clamdMaxName bounds a virus name as it is put in header fields and
	// the notice; official names are under 100 characters.
	clamdMaxName = 200
)

// clamdCommand starts a scan. INSTREAM must carry the z (NUL) or n (LF)
// prefix; the unprefixed form gets "UNKNOWN COMMAND" (protocols.md §4.2).
const clamdCommand = "zINSTREAM\x00"

// ErrTooLarge means a message was not scanned because it is larger
// than the filter's max_stream or than clamd's StreamMaxLength. It is an
// error, never "clean": clamd itself would answer "stream: OK" for a stream
// above its MaxFileSize without scanning it (protocols.md item 19), which
// is why max_stream defaults to Debian's limit of 25 MiB.
var ErrTooLarge = errors.New("message too large for clamd")

// errClamdNoReply: clamd closed the connection without answering, as it
// does when the stream ends without the zero-length chunk (protocols.md
// §4.2). Never a clean result.
var errClamdNoReply = errors.New("clamd closed the connection without a reply")

// clamdClient scans messages with one clamd, one connection per scan
// (protocols.md §4.1: clamd answers one command and closes). It holds only
// configuration, so it is safe for concurrent use.
type clamdClient struct {
	network   string // "unix" or "tcp"
	address   string // socket path or host:port
	maxStream int64
}

// scan sends msg to clamd and returns the virus name, "" for clean. Every
// failure is an error, never clean: the refusal of an oversized message, a
// reply ending in ERROR, any other reply, an empty reply, EOF, a timeout
// (protocols.md §4.2 "Parsing", §4.6). The name is sanitised for header
// fields (clamdSafeName).
func (c *clamdClient) scan(ctx context.Context, msg []byte) (string, error) {
	if int64(len(msg)) > c.maxStream {
		return "", fmt.Errorf("%w: %d bytes, max_stream is %d", ErrTooLarge, len(msg), c.maxStream)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, clamdFallbackTimeout)
		defer cancel()
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, c.network, c.address)
	if err != nil {
		return "", c.fail(ctx, "connect", err)
	}
	defer conn.Close()
	// Deadlines bound each read and write by the context's deadline;
	// closing the connection when the context ends makes a cancellation
	// interrupt a blocked read or write at once.
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	werr := writeClamdStream(conn, msg)
	// clamd may answer before the stream ends (the size limit) and close;
	// the write then fails with EPIPE or ECONNRESET, and the reply, which
	// says why, is still there to read (protocols.md item 19; the mistake
	// of python-clamd issue #24 is to report the write error instead).
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

// fail describes an I/O failure. When the context has ended, the error
// wraps its error, so that the chain reports a timeout as "timed out"
// (errors.Is context.DeadlineExceeded) rather than as a refused connection
// or a closed socket; a connection deadline, which is the context's
// deadline, counts as the same timeout.
func (c *clamdClient) fail(ctx context.Context, op string, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("clamd %s: %s: %w", c.where(), op, cerr)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("clamd %s: %s: %w", c.where(), op, context.DeadlineExceeded)
	}
	return fmt.Errorf("clamd %s: %s: %w", c.where(), op, err)
}

func (c *clamdClient) where() string { return c.network + ":" + c.address }

// writeClamdStream writes the command, msg in chunks of
// <uint32 big-endian length><data> and the zero-length chunk that ends the
// stream (protocols.md item 18). Each chunk's length is exactly its data's,
// and the whole stream is written by this one goroutine: a length that does
// not match the bytes is what makes clamd log absurd "requested" sizes
// (protocols.md §4.3, Cisco-Talos/clamav #942). The command goes out with
// the first chunk, the terminator with the last, to save packets.
func writeClamdStream(w io.Writer, msg []byte) error {
	buf := make([]byte, 0, len(clamdCommand)+4+min(len(msg), clamdChunk)+4)
	buf = append(buf, clamdCommand...)
	for len(msg) > 0 {
		n := min(len(msg), clamdChunk)
		buf = binary.BigEndian.AppendUint32(buf, uint32(n))
		buf = append(buf, msg[:n]...)
		msg = msg[n:]
		if len(msg) == 0 {
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

// readClamdReply reads one reply up to its terminator: NUL for z commands,
// but LF for "COMMAND READ TIMED OUT" even then (protocols.md item 18), so
// either ends it. A reply cut off by EOF, or longer than clamdMaxReply, is
// an error.
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
// exactly "stream: OK", and an error for everything else (protocols.md
// §4.2 "Parsing").
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

// clamdSafeName makes a virus name safe for a header field value, a log
// line and a client's screen: printable ASCII only, anything else becomes
// '?', at most clamdMaxName bytes. Names come from the signature database
// and the wire, neither of which this proxy controls; a CR or LF in a name
// would otherwise split a header field (header injection). A FOUND reply
// with no name is still a virus: it is called "unknown".
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
