package filter

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/emersion/go-message/textproto"
)

const maxHeaderBytes = 1 << 20

// errHeaderUnparsable means the header did not parse; fields were only added.
var errHeaderUnparsable = errors.New("header does not parse")

// applyEdits returns msg with the edits applied (see the package
// documentation, Header edits). Fields added by one call form a block at
// the top of the header in the order given; the chain calls it once per run
// of judges, so their fields appear in configuration order.
func applyEdits(msg []byte, edits []Edit) ([]byte, error) {
	var added bytes.Buffer
	var rewrites []Edit
	for _, e := range edits {
		if e.Op == AddField {
			if err := formatField(&added, e.Name, e.Value); err != nil {
				return nil, err
			}
			continue
		}
		rewrites = append(rewrites, e)
	}
	if len(rewrites) == 0 {
		return concat(added.Bytes(), msg), nil
	}

	fields, body, err := splitFields(msg)
	if err != nil {
		return concat(added.Bytes(), msg), fmt.Errorf("%w: %v; %d header edits skipped", errHeaderUnparsable, err, len(rewrites))
	}
	for _, e := range rewrites {
		switch e.Op {
		case RemoveField:
			fields = removeFields(fields, e.Name)
		case PrefixSubject:
			fields, err = prefixSubject(fields, e.Value)
			if err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("unknown header edit %d", e.Op)
		}
	}
	out := make([]byte, 0, added.Len()+len(msg)+64)
	out = append(out, added.Bytes()...)
	for _, f := range fields {
		out = append(out, f.raw...)
	}
	return append(out, body...), nil
}

func concat(a, b []byte) []byte {
	if len(a) == 0 {
		return b
	}
	out := make([]byte, 0, len(a)+len(b))
	return append(append(out, a...), b...)
}

// field is one header field; raw includes folding and the line ending.
type field struct {
	name string
	raw  []byte
}

// splitFields returns the header's fields in order, and the rest of the
// message: the blank line and the body.
func splitFields(msg []byte) ([]field, []byte, error) {
	src := bytes.NewReader(msg)
	br := bufio.NewReader(io.LimitReader(src, maxHeaderBytes))
	h, err := textproto.ReadHeader(br)
	if err != nil {
		return nil, nil, err
	}
	consumed := len(msg) - src.Len() - br.Buffered()
	if consumed >= maxHeaderBytes {
		return nil, nil, fmt.Errorf("header longer than %d bytes", maxHeaderBytes)
	}
	// Hand the blank line back with the body, so it keeps its own bytes.
	headerEnd := consumed
	switch {
	case bytes.HasSuffix(msg[:consumed], []byte("\r\n\r\n")), consumed == 2 && bytes.HasPrefix(msg, []byte("\r\n")):
		headerEnd -= 2
	case bytes.HasSuffix(msg[:consumed], []byte("\n\n")), consumed == 1 && msg[0] == '\n':
		headerEnd--
	}

	var fields []field
	for it := h.Fields(); it.Next(); {
		raw, err := it.Raw()
		if err != nil {
			return nil, nil, err
		}
		fields = append(fields, field{name: it.Key(), raw: raw})
	}
	// ReadHeader turns a bare LF into CRLF, which would change bytes.
	total := 0
	for _, f := range fields {
		total += len(f.raw)
	}
	if total != headerEnd {
		return nil, nil, errors.New("header line endings are not all CRLF")
	}
	return fields, msg[headerEnd:], nil
}

func removeFields(fields []field, name string) []field {
	kept := fields[:0]
	for _, f := range fields {
		if !strings.EqualFold(f.name, name) {
			kept = append(kept, f)
		}
	}
	return kept
}

// prefixSubject puts prefix in front of the Subject's text, in place. A
// Subject that already starts with the prefix is left alone, so that a
// message filtered twice is not tagged twice.
func prefixSubject(fields []field, prefix string) ([]field, error) {
	for i, f := range fields {
		if !strings.EqualFold(f.name, "Subject") {
			continue
		}
		colon := bytes.IndexByte(f.raw, ':')
		start := colon + 1
		for start < len(f.raw) && (f.raw[start] == ' ' || f.raw[start] == '\t') {
			start++
		}
		if bytes.HasPrefix(f.raw[start:], []byte(prefix)) {
			return fields, nil
		}
		raw := make([]byte, 0, len(f.raw)+len(prefix)+1)
		raw = append(raw, f.raw[:colon+1]...)
		raw = append(raw, ' ')
		raw = append(raw, prefix...)
		raw = append(raw, f.raw[start:]...)
		fields[i].raw = raw
		return fields, nil
	}
	var b bytes.Buffer
	if err := formatField(&b, "Subject", strings.TrimSpace(prefix)); err != nil {
		return nil, err
	}
	return append([]field{{name: "Subject", raw: b.Bytes()}}, fields...), nil
}

// CheckFieldName accepts an RFC 5322 §3.6.8 field name: printable ASCII
// (33-126) except the colon.
func CheckFieldName(name string) error {
	if name == "" {
		return errors.New("empty field name")
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < 33 || c > 126 || c == ':' {
			return fmt.Errorf("%q is not a field name (printable ASCII without spaces or colons)", name)
		}
	}
	return nil
}

// maxLine is where added fields are folded (RFC 5322 §2.1.1 recommends 78
// characters).
const maxLine = 78

// formatField writes "Name: value" CRLF, each run of white space made one
// space, folded at spaces, or after commas in a long list without spaces
// (as SpamAssassin folds tests=A,B,C).
func formatField(w *bytes.Buffer, name, value string) error {
	if err := CheckFieldName(name); err != nil {
		return err
	}
	if strings.ContainsAny(value, "\r\n\x00") {
		return fmt.Errorf("header field %s: value contains CR, LF or NUL", name)
	}
	w.WriteString(name)
	w.WriteString(":")
	lineLen := len(name) + 1
	for i, word := range strings.Fields(value) {
		pieces := splitAfterCommas(word, maxLine-lineLen-1)
		for j, p := range pieces {
			sep := " "
			if j > 0 {
				sep = "" // continues a word split after a comma
			}
			if lineLen+len(sep)+len(p) > maxLine && (i > 0 || j > 0) {
				w.WriteString("\r\n\t")
				lineLen = 1
				sep = ""
			}
			w.WriteString(sep)
			w.WriteString(p)
			lineLen += len(sep) + len(p)
		}
	}
	w.WriteString("\r\n")
	return nil
}

func splitAfterCommas(word string, room int) []string {
	if len(word) <= room || !strings.Contains(word, ",") {
		return []string{word}
	}
	return strings.SplitAfter(word, ",")
}
