package filter

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"

	"github.com/emersion/go-message/textproto"

	"github.com/pop3proxy/pop3proxy/filter/spool"
)

// editBytes applies edits to msg as the chain does without a spool.
func editBytes(msg []byte, edits []Edit) ([]byte, error) {
	m, err := applyEdits(NewMessage(msg, Meta{}), edits, func() buffer { return &memBuffer{} })
	if err != nil {
		return nil, err
	}
	return m.Bytes()
}

func TestApplyEdits(t *testing.T) {
	for _, tc := range []struct {
		name, msg string
		edits     []Edit
		want      string
	}{
		{
			name:  "add keeps everything else",
			msg:   "Subject: a\r\n\r\nbody\r\n",
			edits: []Edit{Add("X-One", "1"), Add("X-Two", "2")},
			want:  "X-One: 1\r\nX-Two: 2\r\nSubject: a\r\n\r\nbody\r\n",
		},
		{
			name:  "remove every instance, any case",
			msg:   "X-Spam-Flag: YES\r\nSubject: a\r\nx-spam-flag: no\r\n\r\nb\r\n",
			edits: []Edit{Remove("X-Spam-Flag")},
			want:  "Subject: a\r\n\r\nb\r\n",
		},
		{
			name:  "prefix keeps folding and position",
			msg:   "From: x\r\nSubject:  =?UTF-8?B?w6Q=?=\r\n =?UTF-8?B?w7Y=?=\r\nTo: y\r\n\r\nb\r\n",
			edits: []Edit{SubjectPrefix("[SPAM] ")},
			want:  "From: x\r\nSubject: [SPAM] =?UTF-8?B?w6Q=?=\r\n =?UTF-8?B?w7Y=?=\r\nTo: y\r\n\r\nb\r\n",
		},
		{
			name:  "prefix once only",
			msg:   "Subject: [SPAM] hi\r\n\r\nb\r\n",
			edits: []Edit{SubjectPrefix("[SPAM] ")},
			want:  "Subject: [SPAM] hi\r\n\r\nb\r\n",
		},
		{
			name:  "prefix adds a missing subject",
			msg:   "From: x\r\n\r\nb\r\n",
			edits: []Edit{SubjectPrefix("[SPAM] ")},
			want:  "Subject: [SPAM]\r\nFrom: x\r\n\r\nb\r\n",
		},
		{
			name:  "prefixed subject then a forged field",
			msg:   "Subject: a\r\nX-Spam-Flag: NO\r\n\r\nb\r\n",
			edits: []Edit{SubjectPrefix("[S] "), Remove("X-Spam-Flag")},
			want:  "Subject: [S] a\r\n\r\nb\r\n",
		},
		{
			name:  "prefixed subject last: the body is not header",
			msg:   "X-Old: 1\r\nSubject: a\r\n\r\nX-Old: body\r\n",
			edits: []Edit{Remove("X-Old"), SubjectPrefix("[S] ")},
			want:  "Subject: [S] a\r\n\r\nX-Old: body\r\n",
		},
		{
			name:  "prefixed subject keeps its continuation",
			msg:   "Subject: a\r\n b\r\nX-Old: 1\r\n\r\nb\r\n",
			edits: []Edit{Remove("X-Old"), SubjectPrefix("[S] ")},
			want:  "Subject: [S] a\r\n b\r\n\r\nb\r\n",
		},
		{
			name:  "prefixed subject line longer than the scanner's peek",
			msg:   "Subject: " + strings.Repeat("s", 3000) + "\r\nX-Old: 1\r\n\r\nb",
			edits: []Edit{Remove("X-Old"), SubjectPrefix("[S] ")},
			want:  "Subject: [S] " + strings.Repeat("s", 3000) + "\r\n\r\nb",
		},
		{
			name:  "header only, no blank line",
			msg:   "Subject: a\r\nX-Old: 1\r\n",
			edits: []Edit{Remove("X-Old"), Add("X-New", "2")},
			want:  "X-New: 2\r\nSubject: a\r\n",
		},
		{
			name:  "mbox From_ line kept in place, edits around it",
			msg:   "From MAILER-DAEMON Sun Jan  1 00:00:00 2026\r\nSubject: a\r\nX-Old: 1\r\n\r\nb\r\n",
			edits: []Edit{Remove("X-Old"), SubjectPrefix("[S] "), Add("X-New", "2")},
			want:  "X-New: 2\r\nFrom MAILER-DAEMON Sun Jan  1 00:00:00 2026\r\nSubject: [S] a\r\n\r\nb\r\n",
		},
		{
			name:  "bare LF header is edited in place",
			msg:   "Subject: a\nX-Old: 1\n\tfolded\nTo: b\n\nX-Old: body\n",
			edits: []Edit{Remove("X-Old"), SubjectPrefix("[S] ")},
			want:  "Subject: [S] a\nTo: b\n\nX-Old: body\n",
		},
		{
			name:  "colon-less line and its continuation kept in place",
			msg:   "A: 1\r\nno colon here\r\n X-Old: continuation\r\nX-Old: 2\r\n\tfolded\r\nB: 3\r\n\r\nb",
			edits: []Edit{Remove("X-Old")},
			want:  "A: 1\r\nno colon here\r\n X-Old: continuation\r\nB: 3\r\n\r\nb",
		},
		{
			name:  "a first line that is a continuation is kept",
			msg:   " X-Old: 1\r\nX-Old: 2\r\n\r\nb",
			edits: []Edit{Remove("X-Old")},
			want:  " X-Old: 1\r\n\r\nb",
		},
		{
			name:  "white space before the colon (RFC 5322 section 4.5)",
			msg:   "X-Old : 1\r\nX-Old\t: 2\r\nSubject : a\r\n\r\nb",
			edits: []Edit{Remove("X-Old"), SubjectPrefix("[S] ")},
			want:  "Subject : [S] a\r\n\r\nb",
		},
		{
			name:  "header without a body and without a final line end",
			msg:   "Subject: a\r\nno colon\r\nX-Old: 1",
			edits: []Edit{Remove("X-Old"), SubjectPrefix("[S] ")},
			want:  "Subject: [S] a\r\nno colon\r\n",
		},
		{
			name:  "last field without a line end prefixed in place",
			msg:   "X-Old: 1\r\nSubject: a",
			edits: []Edit{Remove("X-Old"), SubjectPrefix("[S] ")},
			want:  "Subject: [S] a",
		},
		{
			name:  "a line of spaces continues a field",
			msg:   "X-Old: 1\r\n \r\nSubject: a\r\n\r\nb",
			edits: []Edit{Remove("X-Old")},
			want:  "Subject: a\r\n\r\nb",
		},
		{
			name:  "LF blank line after CRLF lines ends the header",
			msg:   "Subject: a\r\nX-Old: 1\r\n\nX-Old: body\r\n",
			edits: []Edit{Remove("X-Old")},
			want:  "Subject: a\r\n\nX-Old: body\r\n",
		},
		{
			name:  "bare CR and 8-bit bytes in fields are kept",
			msg:   "Subject: a\rb \xe4\r\nX-\xe4: 1\r\nX-Old: 1\r\n\r\n",
			edits: []Edit{Remove("X-Old"), SubjectPrefix("[S] ")},
			want:  "Subject: [S] a\rb \xe4\r\nX-\xe4: 1\r\n\r\n",
		},
		{
			name:  "a line with an empty name is not a field",
			msg:   ": x\r\nX-Old: 1\r\n\r\nb",
			edits: []Edit{Remove("X-Old")},
			want:  ": x\r\n\r\nb",
		},
		{
			name:  "prefix adds a missing subject above an mbox line",
			msg:   "From x y\r\n\r\nb",
			edits: []Edit{SubjectPrefix("[S] ")},
			want:  "Subject: [S]\r\nFrom x y\r\n\r\nb",
		},
		{
			name:  "prefix, then remove: no subject",
			msg:   "Subject: a\r\nTo: b\r\n\r\n",
			edits: []Edit{SubjectPrefix("[S] "), Remove("subject")},
			want:  "To: b\r\n\r\n",
		},
		{
			name:  "remove, then prefix: a new subject",
			msg:   "Subject: a\r\nTo: b\r\nSubject: c\r\n\r\n",
			edits: []Edit{Remove("Subject"), SubjectPrefix("[S] ")},
			want:  "Subject: [S]\r\nTo: b\r\n\r\n",
		},
		{
			name:  "two prefixes on a new subject",
			msg:   "To: b\r\n\r\n",
			edits: []Edit{SubjectPrefix("[A] "), SubjectPrefix("[B] ")},
			want:  "Subject: [B] [A]\r\nTo: b\r\n\r\n",
		},
		{
			name:  "only the first subject is prefixed",
			msg:   "Subject: a\r\nSubject: b\r\n\r\n",
			edits: []Edit{SubjectPrefix("[S] ")},
			want:  "Subject: [S] a\r\nSubject: b\r\n\r\n",
		},
		{
			name:  "empty message",
			msg:   "",
			edits: []Edit{Remove("X-Old"), SubjectPrefix("[S] "), Add("X-New", "2")},
			want:  "X-New: 2\r\nSubject: [S]\r\n",
		},
		{
			name:  "body bytes after edits are exact",
			msg:   "Subject: a\r\n\r\n\r\n.\r\n..x\r\n\x00\xff\r",
			edits: []Edit{Remove("Subject")},
			want:  "\r\n\r\n.\r\n..x\r\n\x00\xff\r",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := editBytes([]byte(tc.msg), tc.edits)
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if string(got) != tc.want {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestAddedFieldsAreFolded(t *testing.T) {
	tests := strings.Repeat("SOME_LONG_RULE_NAME,", 12) + "LAST"
	got, err := editBytes([]byte("S: a\r\n\r\n"), []Edit{Add("X-Spam-Status", "Yes, score=12.5 required=5.0 tests="+tests+" autolearn=no")})
	if err != nil {
		t.Fatal(err)
	}
	hdr, _, _ := strings.Cut(string(got), "\r\nS: a")
	for _, line := range strings.Split(hdr, "\r\n") {
		if len(line) > maxLine {
			t.Errorf("line of %d octets: %q", len(line), line)
		}
	}
	unfolded := strings.NewReplacer("\r\n\t", "").Replace(hdr)
	if !strings.Contains(unfolded, tests) {
		t.Errorf("folding lost text:\n%s", hdr)
	}
}

func TestEditsRefuseInjection(t *testing.T) {
	for _, e := range []Edit{Add("X-A", "v\r\nBcc: victim@example.com"), Add("Bad:Name", "v"), Add("X-A", "nul\x00")} {
		if _, err := editBytes([]byte("S: a\r\n\r\n"), []Edit{e}); err == nil {
			t.Errorf("edit %+v accepted", e)
		}
	}
}

// TestEditsLongHeader: a header of any length is edited; a forged field
// after a long one is still removed.
func TestEditsLongHeader(t *testing.T) {
	pad := "X-Pad: " + strings.Repeat("p", 2<<20) + "\r\n"
	got, err := editBytes([]byte(pad+"X-Spam-Flag: NO\r\nSubject: a\r\n\r\nb\r\n"), []Edit{Remove("X-Spam-Flag"), SubjectPrefix("[S] ")})
	if err != nil {
		t.Fatal(err)
	}
	if want := pad + "Subject: [S] a\r\n\r\nb\r\n"; string(got) != want {
		t.Errorf("long header: got %d bytes ending %q", len(got), got[max(0, len(got)-40):])
	}
}

func TestEditsRefuseInvalidPrefix(t *testing.T) {
	for _, p := range []string{"[S]\r\nBcc: victim@example.com ", "[S]\n", "\x00"} {
		if _, err := editBytes([]byte("Subject: a\r\n\r\n"), []Edit{SubjectPrefix(p)}); err == nil {
			t.Errorf("prefix %q accepted", p)
		}
	}
}

// TestFieldsMatchStrictParser: on headers textproto.ReadHeader accepts, the
// line-based reading finds the same fields with the same bytes.
func TestFieldsMatchStrictParser(t *testing.T) {
	for _, hdr := range []string{
		"Subject: a\r\n",
		"Received: from a\r\n\tby b\r\n (c)\r\nSubject:  =?UTF-8?B?w6Q=?=\r\n =?UTF-8?B?w7Y=?=\r\nX-Empty:\r\nTo: x,\r\n \r\n y\r\n",
		"X-Spam-Flag : NO\r\nx-spam-status:No\r\nX-8bit: \xe4\xf6\r\nX-CR: a\rb\r\nX-Weird!#$%&'*+-.^_`|~: v\r\n",
		"Long: " + strings.Repeat("v", 10000) + "\r\nNext: 1\r\n",
	} {
		h, err := textproto.ReadHeader(bufio.NewReader(strings.NewReader(hdr + "\r\nbody\r\n")))
		if err != nil {
			t.Fatalf("%q: strict parser: %v", hdr, err)
		}
		type fld struct{ name, raw string }
		var strict, lines []fld
		for it := h.Fields(); it.Next(); {
			raw, _ := it.Raw()
			strict = append(strict, fld{strings.ToLower(it.Key()), string(raw)})
		}
		sc := newElementScanner(strings.NewReader(hdr + "\r\nbody\r\n"))
		for {
			head, ok, err := sc.next()
			if err != nil {
				t.Fatalf("%q: next: %v", hdr, err)
			}
			if !ok {
				break
			}
			// The chain decides on head alone: it must name the same
			// field as the whole element.
			headName, headIsField := fieldName(head)
			headName = bytes.Clone(headName) // head is valid until finish
			var elem bytes.Buffer
			if err := sc.finish(&elem, 0); err != nil {
				t.Fatalf("%q: finish: %v", hdr, err)
			}
			name, ok := fieldName(elem.Bytes())
			if !ok {
				t.Errorf("%q: %q is not a field", hdr, elem.Bytes())
			}
			if headIsField != ok || !bytes.Equal(headName, name) {
				t.Errorf("%q: head says %q (%v), element %q (%v)", hdr, headName, headIsField, name, ok)
			}
			lines = append(lines, fld{strings.ToLower(string(name)), elem.String()})
		}
		if sc.pos != int64(len(hdr)) {
			t.Errorf("%q: header ends at %d, want %d", hdr, sc.pos, len(hdr))
		}
		if fmt.Sprint(strict) != fmt.Sprint(lines) {
			t.Errorf("fields differ\nstrict %q\nlines  %q", strict, lines)
		}
	}
}

// TestEditsStreamFromSpool: a message held in a spool file, with a 2 MiB
// header and a forged field after it, is edited by streaming: the new
// header goes to a spool file as well, the body is shared with the
// original, and far less memory is allocated than the header's size. An
// edit that only adds fields makes no buffer at all: the result is the
// added fields in front of the original.
func TestEditsStreamFromSpool(t *testing.T) {
	sp, err := spool.New(spool.Options{Memory: 0, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	pad := "X-Pad: " + strings.Repeat("p", 2<<20) + "\r\n"
	header := pad + "X-Spam-Flag: NO\r\nSubject: a\r\n"
	msg := header + "\r\nbody\r\n"
	in := sp.NewBuffer(int64(len(msg)))
	defer in.Close()
	if _, err := io.WriteString(in, msg); err != nil || in.InMemory() {
		t.Fatalf("spooling the message: %v, in memory %v", err, in.InMemory())
	}
	m := NewMessageAt(in, in.Size(), Meta{})

	var bufs []*spool.Buffer
	newBuffer := func() buffer {
		b := sp.NewBuffer(0)
		bufs = append(bufs, b)
		return b
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	out, err := applyEdits(m, []Edit{Remove("X-Spam-Flag"), SubjectPrefix("[S] ")}, newBuffer)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, b := range bufs {
			b.Close()
		}
	}()
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 1<<20 {
		t.Errorf("editing a %d-octet header allocated %d octets", len(header), alloc)
	}
	got, err := out.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if want := pad + "Subject: [S] a\r\n\r\nbody\r\n"; string(got) != want {
		t.Fatalf("edited message: %d octets ending %q", len(got), got[max(0, len(got)-60):])
	}
	if len(bufs) != 1 || bufs[0].InMemory() {
		t.Fatalf("%d buffers made, want one, spooled to a file", len(bufs))
	}
	if st := sp.Stats(); st.MemoryUsed != 0 || st.FilesOpen != 2 {
		t.Errorf("spool %+v, want two files and no memory", st)
	}
	last := out.parts[len(out.parts)-1]
	if last.r != io.ReaderAt(in) || last.off != int64(len(header)) || last.n != int64(len("\r\nbody\r\n")) {
		t.Errorf("the body is not read from the original: last part %+v", last)
	}

	before2 := sp.Stats()
	added, err := applyEdits(m, []Edit{Add("X-New", "1")}, func() buffer {
		t.Error("an edit that only adds fields made a buffer")
		return &memBuffer{}
	})
	if err != nil {
		t.Fatal(err)
	}
	const field = "X-New: 1\r\n"
	if added.Size() != int64(len(field))+m.Size() {
		t.Errorf("Size = %d, want %d + %d", added.Size(), len(field), m.Size())
	}
	if len(added.parts) != 2 || added.parts[1].r != io.ReaderAt(in) || added.parts[1].off != 0 || added.parts[1].n != in.Size() {
		t.Errorf("the result does not share the original: parts %+v", added.parts)
	}
	if st := sp.Stats(); st != before2 {
		t.Errorf("spool %+v after adding a field, was %+v", st, before2)
	}
	got, err = added.Bytes()
	if err != nil || string(got) != field+msg {
		t.Errorf("added field: %d octets starting %.40q, %v", len(got), got, err)
	}
}
