package filter

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
)

// editError is an invalid edit, a plugin's bug; index is its position in
// the edits given to applyEdits, so that the chain can blame its plugin.
type editError struct {
	index int
	err   error
}

func (e *editError) Error() string { return fmt.Sprintf("header edit %d: %v", e.index+1, e.err) }
func (e *editError) Unwrap() error { return e.err }

// applyEdits returns msg with the edits applied (see the package
// documentation, Header edits). Fields added by one call form a block at
// the top of the header in the order given; the chain calls it once per run
// of judges, so their fields appear in configuration order. Removals and
// Subject prefixes apply in the order given. The only error is an invalid
// edit (*editError); the header itself is never a reason to fail.
func applyEdits(msg []byte, edits []Edit) ([]byte, error) {
	var added bytes.Buffer
	rewrites := false
	for i, e := range edits {
		if err := checkEdit(e); err != nil {
			return nil, &editError{index: i, err: err}
		}
		switch e.Op {
		case AddField:
			formatField(&added, e.Name, e.Value)
		default:
			rewrites = true
		}
	}
	if !rewrites {
		return concat(added.Bytes(), msg), nil
	}

	headerLen := headerLength(msg)
	header := msg[:headerLen]
	subj := planSubject(header, edits)
	var removed [][]byte
	for _, e := range edits {
		if e.Op == RemoveField && !strings.EqualFold(e.Name, "Subject") {
			removed = append(removed, []byte(e.Name))
		}
	}

	out := make([]byte, 0, added.Len()+len(subj.added)+len(msg)+len(subj.first)+64)
	out = append(out, added.Bytes()...)
	out = append(out, subj.added...)
	for pos := 0; pos < len(header); {
		elem := nextElement(header[pos:])
		start := pos
		pos += len(elem)
		name, isField := fieldName(elem)
		switch {
		case !isField:
		case bytes.EqualFold(name, subjectName):
			if !subj.keep {
				continue
			}
			if start == subj.firstAt {
				out = append(out, subj.first...)
				continue
			}
		case containsFold(removed, name):
			continue
		}
		out = append(out, elem...)
	}
	return append(out, msg[headerLen:]...), nil
}

// checkEdit refuses what would inject header lines or not be a field.
func checkEdit(e Edit) error {
	switch e.Op {
	case AddField:
		if err := CheckFieldName(e.Name); err != nil {
			return err
		}
		if strings.ContainsAny(e.Value, "\r\n\x00") {
			return fmt.Errorf("header field %s: value contains CR, LF or NUL", e.Name)
		}
	case RemoveField:
		return CheckFieldName(e.Name)
	case PrefixSubject:
		if strings.ContainsAny(e.Value, "\r\n\x00") {
			return fmt.Errorf("subject prefix %q contains CR, LF or NUL", e.Value)
		}
	default:
		return fmt.Errorf("unknown header edit %d", e.Op)
	}
	return nil
}

func concat(a, b []byte) []byte {
	if len(a) == 0 {
		return b
	}
	out := make([]byte, 0, len(a)+len(b))
	return append(append(out, a...), b...)
}

func containsFold(names [][]byte, name []byte) bool {
	for _, n := range names {
		if bytes.EqualFold(n, name) {
			return true
		}
	}
	return false
}

// headerLength returns the length of msg's header: up to the first empty
// line (CRLF or a bare LF), which stays with the body, or all of msg.
func headerLength(msg []byte) int {
	for i := 0; i < len(msg); {
		if msg[i] == '\n' || (msg[i] == '\r' && i+1 < len(msg) && msg[i+1] == '\n') {
			return i
		}
		eol := bytes.IndexByte(msg[i:], '\n')
		if eol < 0 {
			break
		}
		i += eol + 1
	}
	return len(msg)
}

// nextElement returns the first line of header with the continuation lines
// that follow it, those starting with a space or a tab (RFC 5322 §2.2.3),
// line ends included; the last line of a header may have none.
func nextElement(header []byte) []byte {
	end := 0
	for {
		eol := bytes.IndexByte(header[end:], '\n')
		if eol < 0 {
			return header
		}
		end += eol + 1
		if end == len(header) || (header[end] != ' ' && header[end] != '\t') {
			return header[:end]
		}
	}
}

// fieldName returns the name of the field elem starts, and false if elem is
// not a field (an mbox "From " line, a line without a colon, a stray
// continuation line). A name is RFC 5322 §3.6.8 printable ASCII without a
// colon; white space may precede the colon (RFC 5322 §4.5, obsolete
// syntax, which receivers must accept).
func fieldName(elem []byte) ([]byte, bool) {
	n := 0
	for n < len(elem) && validNameByte(elem[n]) {
		n++
	}
	if n == 0 {
		return nil, false
	}
	i := n
	for i < len(elem) && (elem[i] == ' ' || elem[i] == '\t') {
		i++
	}
	if i == len(elem) || elem[i] != ':' {
		return nil, false
	}
	return elem[:n], true
}

var subjectName = []byte("Subject")

func validNameByte(c byte) bool { return c >= 33 && c <= 126 && c != ':' }

// subjectPlan is what a run of edits does to the Subject. Every field of
// one name is removed together, so the original Subject fields are all
// kept or all gone, and only the first of them is ever prefixed.
type subjectPlan struct {
	keep    bool   // the original Subject fields stay
	firstAt int    // offset of the first one in the header, -1 if none
	first   []byte // its bytes after the prefixes
	added   []byte // a new Subject field at the top, or nil
}

// planSubject applies the edits' Subject removals and prefixes in order: a
// prefix goes to the first Subject there is, or makes a new one at the top
// of the header, where it is found before any other.
func planSubject(header []byte, edits []Edit) subjectPlan {
	p := subjectPlan{keep: true, firstAt: -1}
	for pos := 0; pos < len(header); {
		elem := nextElement(header[pos:])
		if name, ok := fieldName(elem); ok && bytes.EqualFold(name, subjectName) {
			p.firstAt, p.first = pos, elem
			break
		}
		pos += len(elem)
	}
	for _, e := range edits {
		switch {
		case e.Op == RemoveField && strings.EqualFold(e.Name, "Subject"):
			p.keep, p.added = false, nil
		case e.Op != PrefixSubject:
		case p.added != nil:
			p.added = prefixSubject(p.added, e.Value)
		case p.keep && p.firstAt >= 0:
			p.first = prefixSubject(p.first, e.Value)
		default:
			var b bytes.Buffer
			formatField(&b, "Subject", strings.TrimSpace(e.Value))
			p.added = b.Bytes()
		}
	}
	return p
}

// prefixSubject puts prefix in front of the text of a raw Subject field,
// keeping its other bytes. A Subject that already starts with the prefix
// is left alone, so that a message filtered twice is not tagged twice.
func prefixSubject(raw []byte, prefix string) []byte {
	colon := bytes.IndexByte(raw, ':')
	start := colon + 1
	for start < len(raw) && (raw[start] == ' ' || raw[start] == '\t') {
		start++
	}
	if bytes.HasPrefix(raw[start:], []byte(prefix)) {
		return raw
	}
	out := make([]byte, 0, len(raw)+len(prefix)+1)
	out = append(out, raw[:colon+1]...)
	out = append(out, ' ')
	out = append(out, prefix...)
	return append(out, raw[start:]...)
}

// CheckFieldName accepts an RFC 5322 §3.6.8 field name: printable ASCII
// (33-126) except the colon.
func CheckFieldName(name string) error {
	if name == "" {
		return errors.New("empty field name")
	}
	for i := 0; i < len(name); i++ {
		if !validNameByte(name[i]) {
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
// (as SpamAssassin folds tests=A,B,C). The edit is checked (checkEdit).
func formatField(w *bytes.Buffer, name, value string) {
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
}

func splitAfterCommas(word string, room int) []string {
	if len(word) <= room || !strings.Contains(word, ",") {
		return []string{word}
	}
	return strings.SplitAfter(word, ",")
}
