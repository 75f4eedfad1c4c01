package filter

import (
	"bytes"
	"errors"
	"fmt"
	"io"
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

// buffer is where a rewritten header goes: a spool.Buffer, or memory.
type buffer interface {
	io.Writer
	io.ReaderAt
	Size() int64
}

// memBuffer is a buffer in memory, for chains without a spool.
type memBuffer struct{ b []byte }

func (m *memBuffer) Write(p []byte) (int, error) { m.b = append(m.b, p...); return len(p), nil }
func (m *memBuffer) Size() int64                 { return int64(len(m.b)) }
func (m *memBuffer) ReadAt(p []byte, off int64) (int, error) {
	return bytes.NewReader(m.b).ReadAt(p, off)
}

// applyEdits returns m with the edits applied, in order (package
// documentation, Header edits); added fields form a block at the top.
// Added fields are put in front of m without copying it; only removals
// and prefixes rewrite the header, streamed into a buffer from newBuffer
// (so a header of any size costs no more memory than the spool allows),
// and the body is shared. The only error besides reading m is an invalid
// edit (*editError); the header itself is never a reason to fail.
func applyEdits(m *Message, edits []Edit, newBuffer func() buffer) (*Message, error) {
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
		return concatMessages(m.Meta, added.Bytes(), sectionOf{m, 0, m.size}), nil
	}

	var removed [][]byte
	for _, e := range edits {
		if e.Op == RemoveField && !strings.EqualFold(e.Name, "Subject") {
			removed = append(removed, []byte(e.Name))
		}
	}
	subj, err := planSubject(m, edits)
	if err != nil {
		return nil, err
	}
	out := newBuffer()
	out.Write(added.Bytes())
	out.Write(subj.added)
	sc := newElementScanner(m.Open())
	defer sc.release()
	seenSubject := false
	for {
		head, ok, err := sc.next()
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		name, isField := fieldName(head)
		var w io.Writer = out
		skip := 0
		switch {
		case !isField:
		case bytes.EqualFold(name, subjectName):
			first := !seenSubject
			seenSubject = true
			switch {
			case !subj.keep:
				w = nil
			case first && len(subj.prefixes) > 0:
				line := head
				if i := bytes.IndexByte(line, '\n'); i >= 0 {
					line = line[:i+1]
				}
				prefixed := line
				for _, p := range subj.prefixes {
					prefixed = prefixSubject(prefixed, p)
				}
				out.Write(prefixed)
				skip = len(line)
			}
		case containsFold(removed, name):
			w = nil
		}
		if err := sc.finish(w, skip); err != nil {
			return nil, err
		}
	}
	if b, ok := out.(interface{ Err() error }); ok && b.Err() != nil {
		return nil, b.Err()
	}
	return concatMessages(m.Meta, sectionOf{NewMessageAt(out, out.Size(), m.Meta), 0, out.Size()},
		sectionOf{m, sc.pos, m.size - sc.pos}), nil
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

func containsFold(names [][]byte, name []byte) bool {
	for _, n := range names {
		if bytes.EqualFold(n, name) {
			return true
		}
	}
	return false
}

// fieldName returns the name of the field elem starts, or false (an mbox
// "From " line, a line without a colon, a stray continuation line). White
// space may precede the colon (RFC 5322 §4.5, obsolete syntax, which
// receivers must accept).
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
	keep     bool     // the original Subject fields stay
	prefixes []string // for the first of them, in order
	added    []byte   // a new Subject field at the top, or nil
}

// planSubject applies the edits' Subject removals and prefixes in order: a
// prefix goes to the first Subject there is, or makes a new one at the top
// of the header, where it is found before any other.
func planSubject(m *Message, edits []Edit) (subjectPlan, error) {
	p := subjectPlan{keep: true}
	exists, known := false, false
	for _, e := range edits {
		switch {
		case e.Op == RemoveField && strings.EqualFold(e.Name, "Subject"):
			p.keep, p.added, p.prefixes = false, nil, nil
		case e.Op != PrefixSubject:
		case p.added != nil:
			p.added = prefixSubject(p.added, e.Value)
		default:
			if p.keep && !known {
				var err error
				if exists, err = hasSubject(m); err != nil {
					return p, err
				}
				known = true
			}
			if p.keep && exists {
				p.prefixes = append(p.prefixes, e.Value)
				continue
			}
			var b bytes.Buffer
			formatField(&b, "Subject", strings.TrimSpace(e.Value))
			p.added = b.Bytes()
		}
	}
	return p, nil
}

func hasSubject(m *Message) (bool, error) {
	sc := newElementScanner(m.Open())
	defer sc.release()
	for {
		head, ok, err := sc.next()
		if err != nil || !ok {
			return false, err
		}
		if name, isField := fieldName(head); isField && bytes.EqualFold(name, subjectName) {
			return true, nil
		}
		if err := sc.finish(nil, 0); err != nil {
			return false, err
		}
	}
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

// maxLine is where added fields are folded (RFC 5322 §2.1.1 recommends 78).
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
