package upstream

import (
	"bufio"
	"fmt"
	"strconv"

	"go.uber.org/zap"
)

// maxListLine caps a listing line, CRLF included: "n size" needs 30 octets,
// "n unique-id" 83 at RFC 1939 §7's 70-octet limit, which some servers exceed.
const maxListLine = 1 << 10

// listing parses the multi-line form line by line from the streaming reader
// straight into the result: memory is that and the reader's fixed buffer.
func (c *Client) listing(cmd string, msg int, parse func([]byte) (MessageInfo, bool)) ([]MessageInfo, error) {
	if msg < 0 {
		return nil, fmt.Errorf("upstream %s: %s: %w: message number %d", c.addr, cmd, ErrBadArgument, msg)
	}
	if msg > 0 {
		op := cmd + " " + strconv.Itoa(msg)
		buf, err := c.do(respSingle, op, cmd, msg)
		if err != nil {
			return nil, err
		}
		mi, ok := parse(buf.Bytes())
		if !ok || mi.Number != msg {
			return nil, c.fail(op, malformed(buf.Bytes()))
		}
		return []MessageInfo{mi}, nil
	}
	if _, err := c.begin(cmd, respMulti); err != nil {
		return nil, err
	}
	var out listBuilder
	for {
		line, err := c.br.ReadSlice('\n')
		if err == bufio.ErrBufferFull || len(line) > maxListLine {
			return nil, c.fail(cmd, fmt.Errorf("line longer than %d octets", maxListLine))
		}
		if err != nil {
			return nil, c.fail(cmd, unexpectedEOF(err))
		}
		line = trimEOL(line)
		if len(line) > 0 && line[0] == '.' {
			if len(line) == 1 {
				break // the terminating line (RFC 1939 §3)
			}
			line = line[1:] // byte-stuffed
		}
		if f, _ := nextField(line); len(f) == 0 {
			continue // blank: tolerated, as go-pop3 did
		}
		if out.n == c.opt.MaxMessages {
			c.log.Warn("upstream listing longer than upstream.max_messages; connection closed without QUIT",
				zap.String("command", cmd), zap.Int("count", out.n+1), zap.Int("max_messages", c.opt.MaxMessages),
				zap.String("status", sanitize(statusText(c.g.status()), maxErrorText)))
			return nil, c.fail(cmd, fmt.Errorf("%w: more than %d entries (Options.MaxMessages)", ErrTooManyMessages, c.opt.MaxMessages))
		}
		mi, ok := parse(line)
		if !ok {
			return nil, c.fail(cmd, malformed(line))
		}
		out.add(mi)
	}
	return out.result(), nil
}

// listBuilder joins chunks once: appending to one slice would copy entries
// again and again (about 5x the result for a long listing, up to a quarter
// unused); chunks cost the result twice, briefly, with no spare capacity.
type listBuilder struct {
	full [][]MessageInfo
	cur  []MessageInfo
	n    int
}

const (
	firstChunk = 64
	maxChunk   = 8192 // 256 KiB of entries
)

func (b *listBuilder) add(mi MessageInfo) {
	if len(b.cur) == cap(b.cur) {
		if b.cur != nil {
			b.full = append(b.full, b.cur)
		}
		b.cur = make([]MessageInfo, 0, min(max(2*cap(b.cur), firstChunk), maxChunk))
	}
	b.cur = append(b.cur, mi)
	b.n++
}

func (b *listBuilder) result() []MessageInfo {
	if len(b.full) == 0 {
		return b.cur
	}
	out := make([]MessageInfo, 0, b.n)
	for _, c := range b.full {
		out = append(out, c...)
	}
	return append(out, b.cur...)
}

// nextField splits at ASCII white space as bytes.Fields does, without allocating.
func nextField(b []byte) (field, rest []byte) {
	i := 0
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	j := i
	for j < len(b) && !isSpace(b[j]) {
		j++
	}
	return b[i:j], b[j:]
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f'
}

// parseNum takes at most 18 digits, which cannot overflow.
func parseNum(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// parseListLine parses "n size"; RFC 1939 §5 allows more after the size.
func parseListLine(line []byte) (MessageInfo, bool) {
	f0, rest := nextField(line)
	f1, _ := nextField(rest)
	n, ok1 := parseNum(f0)
	size, ok2 := parseNum(f1)
	if !ok1 || !ok2 || n < 1 || n > 1<<31-1 {
		return MessageInfo{}, false
	}
	return MessageInfo{Number: int(n), Size: size}, true
}

// parseUidlLine: unique-ids are relayed as is, so 0x21-0x7E only (RFC 1939 §7);
// their 70-octet limit, which some servers exceed, is left to the line cap.
func parseUidlLine(line []byte) (MessageInfo, bool) {
	f0, rest := nextField(line)
	uid, _ := nextField(rest)
	n, ok := parseNum(f0)
	if !ok || n < 1 || n > 1<<31-1 || len(uid) == 0 {
		return MessageInfo{}, false
	}
	for _, b := range uid {
		if b < 0x21 || b > 0x7e {
			return MessageInfo{}, false
		}
	}
	return MessageInfo{Number: int(n), UID: string(uid)}, true
}
