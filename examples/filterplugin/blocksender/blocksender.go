// Package blocksender is an example pop3proxy filter plugin: it tags or
// rejects messages whose From address matches a pattern. The chain handles
// the common keys (type, name, timeout, on_error), decodes the rest
// strictly into BlockSender, and calls Judge concurrently; see
// examples/filterplugin/README.md for the configuration and a walkthrough.
package blocksender

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"
	"go.uber.org/zap"

	"github.com/pop3proxy/pop3proxy/filter"
)

func init() {
	filter.Register(filter.PluginInfo{Type: "blocksender", New: func() filter.Plugin { return new(BlockSender) }})
}

// TagField is the header field action "tag" adds, naming the pattern.
const TagField = "X-Blocked-Sender"

// maxHeader bounds the header read; go-message's ReadHeader has no limit.
const maxHeader = 256 << 10

// BlockSender tags or rejects mail from the configured senders.
type BlockSender struct {
	// Senders are patterns for the From address, case-insensitive: "*"
	// matches any run of characters, "?" any one.
	Senders []string `yaml:"senders"`
	// Action is "tag" (add TagField, deliver) or "reject" (answer RETR
	// with -ERR: the message stays on the server for the next poll).
	Action string `yaml:"action"`

	patterns []string
	reject   bool
	log      *zap.Logger
}

// Provision checks the configuration once at start; an error stops the proxy.
func (b *BlockSender) Provision(env filter.Env) error {
	b.log = env.Logger
	if b.log == nil {
		b.log = zap.NewNop()
	}
	switch b.Action {
	case "", "tag":
	case "reject":
		b.reject = true
	default:
		return fmt.Errorf("action %q is not one of tag, reject", b.Action)
	}
	if len(b.Senders) == 0 {
		return errors.New("senders: give at least one pattern")
	}
	for i, p := range b.Senders {
		// The pattern goes into TagField: it must be printable ASCII.
		if p == "" || strings.IndexFunc(p, func(r rune) bool { return r <= ' ' || r > '~' }) >= 0 {
			return fmt.Errorf("senders[%d]: %q is not a pattern (printable ASCII, no spaces)", i, p)
		}
		b.patterns = append(b.patterns, strings.ToLower(p))
	}
	return nil
}

// Judge never fails: a header it cannot parse is let through, as the chain
// does with header edits, so that no message is stuck on the server.
func (b *BlockSender) Judge(_ context.Context, m *filter.Message) (filter.Verdict, error) {
	// The message may be large and held in a file: read only the start.
	h, err := textproto.ReadHeader(bufio.NewReader(io.LimitReader(m.Open(), maxHeader)))
	if err != nil {
		b.log.Info("header does not parse, sender not checked", zap.Int("msg", m.Meta.Number), zap.Error(err))
		return filter.Verdict{}, nil
	}
	for _, addr := range fromAddresses(h) {
		for i, p := range b.patterns {
			if !match(p, addr) {
				continue
			}
			b.log.Info("blocked sender", zap.String("from", addr), zap.String("pattern", b.Senders[i]),
				zap.Bool("reject", b.reject), zap.Int("msg", m.Meta.Number), zap.String("user", m.Meta.User))
			if b.reject {
				// The reason reaches the client: it names no pattern.
				return filter.Verdict{Action: filter.Reject, Reason: "sender blocked"}, nil
			}
			return filter.Verdict{
				Action: filter.Continue,
				Reason: "sender blocked",
				Edits:  []filter.Edit{filter.Add(TagField, b.Senders[i])},
			}, nil
		}
	}
	return filter.Verdict{}, nil
}

// fromAddresses reads all From fields, which a message may repeat to fool filters.
func fromAddresses(h textproto.Header) []string {
	var addrs []string
	for f := h.FieldsByKey("From"); f.Next(); {
		list, err := mail.ParseAddressList(f.Value())
		if err != nil {
			// Malformed, often on purpose: check every word with an "@".
			for _, w := range strings.FieldsFunc(f.Value(), func(r rune) bool { return strings.ContainsRune(" \t\r\n<>,;:\"()", r) }) {
				if strings.Contains(w, "@") {
					addrs = append(addrs, strings.ToLower(w))
				}
			}
			continue
		}
		for _, a := range list {
			addrs = append(addrs, strings.ToLower(a.Address))
		}
	}
	return addrs
}

// match: "*" also matches "/" (unlike path.Match), which a local part may
// contain; on a mismatch the last "*" takes one more byte, fast enough here.
func match(p, s string) bool {
	px, sx := 0, 0
	starP, starS := -1, -1
	for px < len(p) || sx < len(s) {
		if px < len(p) {
			switch c := p[px]; {
			case c == '*':
				starP, starS = px, sx
				px++
				continue
			case sx < len(s) && (c == '?' || c == s[sx]):
				px++
				sx++
				continue
			}
		}
		if starP >= 0 && starS < len(s) {
			starS++
			px, sx = starP+1, starS
			continue
		}
		return false
	}
	return true
}

var (
	_ filter.Judge       = (*BlockSender)(nil)
	_ filter.Provisioner = (*BlockSender)(nil)
)
