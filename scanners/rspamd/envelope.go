package rspamd

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/mail"
	"regexp"
	"strings"

	"github.com/pop3proxy/pop3proxy/filter"
	"github.com/pop3proxy/pop3proxy/scanners/internal/daemon"
)

const (
	// maxHeaderScan bounds the bytes read for the envelope fields: a
	// header past it is the sender's padding, not an MTA's.
	maxHeaderScan = 256 << 10
	maxFieldScan  = 16 << 10
	// maxRcpts bounds the Rcpt headers; rspamd's RCPT_COUNT rules stop
	// distinguishing at 20 and its max_recipients is 1024.
	maxRcpts = 100
	// maxAddress is RFC 5321 §4.5.3.1.3's limit for a path.
	maxAddress = 254
)

// envelopeOf skips unreadable addresses; only a failed read is an error.
func envelopeOf(m *filter.Message) (envelope, error) {
	env := envelope{deliverTo: headerSafe(m.Meta.User)}
	var returnPath, from string
	haveReturnPath, haveFrom := false, false
	seen := map[string]bool{}
	err := scanHeader(m.Open(), envelopeFields, func(name, value string) {
		switch name {
		case "return-path":
			// The delivering MTA puts its Return-Path on top; a sender's
			// own copies below it do not count.
			if !haveReturnPath {
				haveReturnPath = true
				returnPath = returnPathAddress(value)
			}
		case "from":
			if !haveFrom {
				haveFrom = true
				if addrs := addresses(value); len(addrs) > 0 {
					from = addrs[0]
				}
			}
		case "to", "cc":
			for _, a := range addresses(value) {
				key := strings.ToLower(a)
				if len(env.rcpts) < maxRcpts && !seen[key] {
					seen[key] = true
					env.rcpts = append(env.rcpts, a)
				}
			}
		}
	})
	if err != nil {
		return envelope{}, &daemon.ReadError{Err: fmt.Errorf("header: %w", err)}
	}
	env.from = from
	if haveReturnPath && returnPath != "" {
		env.from = returnPath
	}
	return env, nil
}

// envelopeFields are the fields envelopeOf reads; scanHeader copies no
// other, as a message's header has dozens.
var envelopeFields = []string{"return-path", "from", "to", "cc"}

// scanHeader calls field with the name in lower case for every unfolded
// header field of r that names lists, skipping non-field lines (mbox
// "From "), fields over maxFieldScan and one cut off at maxHeaderScan.
func scanHeader(r io.Reader, names []string, field func(name, value string)) error {
	// One line is at most maxHeaderScan bytes: the reader ends there.
	br := bufio.NewReader(io.LimitReader(r, maxHeaderScan))
	var cur []byte // the field being unfolded
	have := false
	total := 0
	flush := func() {
		if have && len(cur) <= maxFieldScan {
			if name, value, ok := splitField(cur, names); ok {
				field(name, value)
			}
		}
		cur, have = cur[:0], false
	}
	for {
		line, err := br.ReadBytes('\n')
		if err != nil && err != io.EOF {
			return err
		}
		total += len(line)
		trimmed := bytes.TrimRight(line, "\r\n")
		switch {
		case len(line) == 0:
		case len(trimmed) == 0:
			flush()
			return nil
		case have && (line[0] == ' ' || line[0] == '\t'):
			if len(cur) <= maxFieldScan {
				cur = append(cur, ' ')
				cur = append(cur, bytes.TrimSpace(trimmed)...)
			}
		default:
			flush()
			cur, have = append(cur, trimmed...), true
		}
		if err == io.EOF {
			if total < maxHeaderScan {
				flush()
			}
			return nil
		}
	}
}

// splitField splits "Name: value" (RFC 5322 §3.6.8, with the white space
// before the colon that §4.5 allows) if the name is one of names (lower
// case), which it returns.
func splitField(b []byte, names []string) (name, value string, ok bool) {
	colon := bytes.IndexByte(b, ':')
	if colon <= 0 {
		return "", "", false
	}
	n := bytes.TrimRight(b[:colon], " \t")
	for _, name := range names {
		if bytes.EqualFold(n, []byte(name)) {
			return name, strings.TrimSpace(string(b[colon+1:])), true
		}
	}
	return "", "", false
}

// addressLike finds addr-specs in text that net/mail cannot parse, as spam
// often has: anything with an @ between delimiters.
var addressLike = regexp.MustCompile(`[^\s<>()\[\],;:"@]+@[^\s<>()\[\],;:"@]+`)

// addresses returns those of a field's addresses fit for a request header.
func addresses(value string) []string {
	var out []string
	if list, err := mail.ParseAddressList(value); err == nil {
		for _, a := range list {
			if s := headerSafe(a.Address); s != "" && strings.Contains(s, "@") {
				out = append(out, s)
			}
		}
		return out
	}
	for _, a := range addressLike.FindAllString(value, maxRcpts) {
		if s := headerSafe(a); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// returnPathAddress passes on "<>", a bounce's null sender, as rspamd takes it.
func returnPathAddress(value string) string {
	v := strings.TrimSpace(value)
	if v == "<>" {
		return "<>"
	}
	if addrs := addresses(v); len(addrs) > 0 {
		return addrs[0]
	}
	return ""
}

// headerSafe returns s if it is printable ASCII without spaces, else "":
// addresses with other bytes (SMTPUTF8) are left out rather than altered.
func headerSafe(s string) string {
	if s == "" || len(s) > maxAddress {
		return ""
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= 0x20 || c >= 0x7f {
			return ""
		}
	}
	return s
}
