package pop3server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"

	"go.uber.org/zap"
)

var errNoMessage = errors.New("session returned neither a message nor an error")

func msgArg(arg string) (int, error) {
	f := fields(arg)
	if len(f) != 1 {
		return 0, badCommand(errSyntax)
	}
	n, ok := parseMsgNumber(f[0])
	if !ok {
		return 0, badCommand(errBadMsgNumber)
	}
	return n, nil
}

func (c *conn) handleStat(arg string) error {
	if err := c.requireState(stateTransaction); err != nil {
		return err
	}
	if err := requireNoArgs(arg); err != nil {
		return err
	}
	count, size, err := c.session.Stat(c.ctx)
	if err != nil {
		return err
	}
	if count < 0 || size < 0 {
		return fmt.Errorf("Stat returned negative count %d or size %d", count, size)
	}
	c.writeOKNumbers(int64(count), size)
	return nil
}

func (c *conn) handleList(arg string) error {
	return c.handleListing(arg, false)
}

func (c *conn) handleUidl(arg string) error {
	return c.handleListing(arg, true)
}

// handleListing answers LIST and UIDL (RFC 1939 §5, §7). Entries are
// checked before "+OK" goes out, since nothing can be retracted after it.
func (c *conn) handleListing(arg string, uidl bool) error {
	if err := c.requireState(stateTransaction); err != nil {
		return err
	}
	list := c.session.List
	if uidl {
		us, ok := c.session.(UIDLSession)
		if !ok {
			return badCommand(errUnknownCommand)
		}
		list = us.Uidl
	}
	msg := 0
	if len(fields(arg)) > 0 {
		n, err := msgArg(arg)
		if err != nil {
			return err
		}
		msg = n
	}

	infos, err := list(c.ctx, msg)
	if err != nil {
		return err
	}
	if msg != 0 {
		if len(infos) == 0 {
			return ErrNoSuchMessage
		}
		// Answer for the number asked, whatever the backend put there.
		infos = []MessageInfo{{Number: msg, Size: infos[0].Size, UID: infos[0].UID}}
	}
	for _, mi := range infos {
		if mi.Number <= 0 || (!uidl && mi.Size < 0) || (uidl && !validUID(mi.UID)) {
			return fmt.Errorf("invalid listing entry: number %d, size %d, unique-id %.80q (%d octets)", mi.Number, mi.Size, mi.UID, len(mi.UID))
		}
	}

	if msg != 0 {
		c.scratch = append(c.scratch[:0], "+OK "...)
		c.writeEntry(infos[0], uidl)
		return nil
	}
	if uidl {
		c.writeLine("+OK unique-id listing follows")
	} else {
		c.writeLine("+OK scan listing follows")
	}
	for _, mi := range infos {
		c.scratch = c.scratch[:0]
		c.writeEntry(mi, uidl)
	}
	c.bw.Write(terminator)
	return nil
}

// writeEntry appends "n size" or "n uid" CRLF to c.scratch and writes it.
func (c *conn) writeEntry(mi MessageInfo, uidl bool) {
	if !uidl {
		c.writeNumbers(int64(mi.Number), mi.Size)
		return
	}
	c.scratch = strconv.AppendInt(c.scratch, int64(mi.Number), 10)
	c.scratch = append(c.scratch, ' ')
	c.scratch = append(c.scratch, mi.UID...)
	c.scratch = append(c.scratch, '\r', '\n')
	c.bw.Write(c.scratch)
}

func (c *conn) handleRetr(arg string) error {
	if err := c.requireState(stateTransaction); err != nil {
		return err
	}
	n, err := msgArg(arg)
	if err != nil {
		return err
	}
	return c.sendMessage(c.withInterim(func(ctx context.Context) (*Message, error) { return c.session.Retr(ctx, n) }))
}

// handleTop answers TOP (RFC 1939 §7).
func (c *conn) handleTop(arg string) error {
	if err := c.requireState(stateTransaction); err != nil {
		return err
	}
	ts, ok := c.session.(TopSession)
	if !ok {
		return badCommand(errUnknownCommand)
	}
	f := fields(arg)
	if len(f) != 2 {
		return badCommand(errSyntax)
	}
	n, ok := parseMsgNumber(f[0])
	if !ok {
		return badCommand(errBadMsgNumber)
	}
	lines, ok := parseLineCount(f[1])
	if !ok {
		return badCommand(errSyntax)
	}
	return c.sendMessage(c.withInterim(func(ctx context.Context) (*Message, error) { return ts.Top(ctx, n, lines) }))
}

// sendMessage writes a RETR or TOP response and closes the body exactly
// once. After "+OK" (begun: sent by the Interim) an error cannot be
// reported, so a failing call or body ends the connection unterminated.
func (c *conn) sendMessage(m *Message, err error, begun bool) error {
	if m != nil && m.Body != nil {
		body := m.Body
		defer func() {
			if err := body.Close(); err != nil {
				c.log.Debug("closing message body failed", zap.Error(err))
			}
		}()
	}
	if begun && (err != nil || m == nil || m.Body == nil) {
		c.log.Warn("message failed after its answer had begun; connection closed so that the client keeps none of it",
			zap.String("command", c.verb), zap.Error(err))
		c.quit = endWith(SessionError, "message failed after its answer began")
		return nil
	}
	if err != nil {
		return err
	}
	if m == nil || m.Body == nil {
		return errNoMessage
	}

	switch {
	case begun:
		// The status line and the first bytes are out; c.dot goes on.
	case m.Size >= 0:
		c.scratch = append(c.scratch[:0], "+OK "...)
		c.scratch = strconv.AppendInt(c.scratch, m.Size, 10)
		c.scratch = append(c.scratch, " octets\r\n"...)
		c.bw.Write(c.scratch)
		c.inMultiline = true
		c.dot.reset(c.bw)
	default:
		c.writeLine("+OK message follows")
		c.inMultiline = true
		c.dot.reset(c.bw)
	}
	c.dot.stuffed = m.Stuffed

	buf := c.copyBuffer()
	for {
		n, rerr := m.Body.Read(buf)
		if n > 0 {
			if _, werr := c.dot.Write(buf[:n]); werr != nil {
				c.quit = endWith(SessionDisconnect, "write failed: "+werr.Error())
				return nil
			}
			if m.Progressive {
				if werr := c.bw.Flush(); werr != nil {
					c.quit = endWith(SessionDisconnect, "write failed: "+werr.Error())
					return nil
				}
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			c.log.Error("reading message failed, response left unterminated",
				zap.String("command", c.verb), zap.Error(rerr))
			c.quit = endWith(SessionError, "message read failed")
			return nil
		}
	}
	if err := c.dot.Close(); err != nil {
		c.quit = endWith(SessionDisconnect, "write failed: "+err.Error())
		return nil
	}
	c.inMultiline = false
	return nil
}

func (c *conn) handleDele(arg string) error {
	if err := c.requireState(stateTransaction); err != nil {
		return err
	}
	n, err := msgArg(arg)
	if err != nil {
		return err
	}
	if err := c.session.Dele(c.ctx, n); err != nil {
		return err
	}
	c.writeLine("+OK message deleted")
	return nil
}

func (c *conn) handleNoop(arg string) error {
	if err := c.requireState(stateTransaction); err != nil {
		return err
	}
	if err := requireNoArgs(arg); err != nil {
		return err
	}
	if err := c.session.Noop(c.ctx); err != nil {
		return err
	}
	c.writeLine("+OK")
	return nil
}

func (c *conn) handleRset(arg string) error {
	if err := c.requireState(stateTransaction); err != nil {
		return err
	}
	if err := requireNoArgs(arg); err != nil {
		return err
	}
	if err := c.session.Rset(c.ctx); err != nil {
		return err
	}
	c.writeLine("+OK")
	return nil
}
