package upstream

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

// unstuffRef is a deliberately simple reference: split into lines, stop at
// "." alone, drop one leading dot. It returns ok=false without a terminator.
func unstuffRef(wire []byte) (body []byte, ok bool) {
	for len(wire) > 0 {
		i := bytes.IndexByte(wire, '\n')
		if i < 0 {
			return body, false
		}
		line := wire[:i+1]
		wire = wire[i+1:]
		if string(line) == ".\r\n" || string(line) == ".\n" {
			return body, true
		}
		if line[0] == '.' {
			line = line[1:]
		}
		body = append(body, line...)
	}
	return body, false
}

var dotCases = []struct {
	name, wire, want string
}{
	{"empty body", ".\r\n", ""},
	{"plain", "a\r\nb\r\n.\r\n", "a\r\nb\r\n"},
	{"stuffed", "..a\r\n...\r\n..\r\n.\r\n", ".a\r\n..\r\n.\r\n"},
	{"unstuffed leading dot", ".a\r\n.\r\n", "a\r\n"},
	{"dot then space", ". \r\n.\r\n", " \r\n"},
	{"dot CR CR LF is no terminator", ".\r\r\n.\r\n", "\r\r\n"},
	{"LF terminator", "a\n.\n", "a\n"},
	{"bare LF and CR kept", "a\nb\rc\r\n.\r\n", "a\nb\rc\r\n"},
	{"dot inside line", "a.\r\n.b.\r\n.\r\n", "a.\r\nb.\r\n"},
	{"8-bit and NUL", "\xff\x00\xe4\r\n.\r\n", "\xff\x00\xe4\r\n"},
	{"empty lines", "\r\n\r\n.\r\n", "\r\n\r\n"},
	{"data after terminator untouched", "a\r\n.\r\nnext", "a\r\n"},
}

func TestDotReader(t *testing.T) {
	for _, tt := range dotCases {
		t.Run(tt.name, func(t *testing.T) {
			if ref, ok := unstuffRef([]byte(tt.wire)); !ok || string(ref) != tt.want {
				t.Fatalf("reference disagrees with the table: %q", ref)
			}
			d := &dotReader{br: bufio.NewReader(strings.NewReader(tt.wire))}
			if err := iotest.TestReader(d, []byte(tt.want)); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestDotReaderLongLines: lines longer than the buffer arrive in pieces; only
// the first piece of a line may lose a leading dot, wherever the buffer ends.
func TestDotReaderLongLines(t *testing.T) {
	const size = 16 // bufio's minimum
	var wire bytes.Buffer
	for n := 1; n < 3*size+3; n++ {
		line := strings.Repeat(".", n) + strings.Repeat("x", n%5) + "\r\n"
		if line[0] == '.' {
			line = "." + line
		}
		wire.WriteString(line)
	}
	wire.WriteString(strings.Repeat("y", size-1) + "\r\n") // CR and LF in different pieces
	wire.WriteString(".\r\n")
	want, ok := unstuffRef(wire.Bytes())
	if !ok {
		t.Fatal("reference found no terminator")
	}
	for _, src := range []struct {
		name string
		r    io.Reader
	}{
		{"whole", bytes.NewReader(wire.Bytes())},
		{"one byte reads", iotest.OneByteReader(bytes.NewReader(wire.Bytes()))},
		{"half reads", iotest.HalfReader(bytes.NewReader(wire.Bytes()))},
	} {
		d := &dotReader{br: bufio.NewReaderSize(src.r, size)}
		got, err := io.ReadAll(d)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: got %q, %v; want %q", src.name, got, err, want)
		}
	}
}

func TestDotReaderTruncated(t *testing.T) {
	for _, wire := range []string{"", "a\r\n", "a\r\n.", "a\r\n.\r", "a\r\n..\r\n", "no newline"} {
		d := &dotReader{br: bufio.NewReader(strings.NewReader(wire))}
		if _, err := io.ReadAll(d); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("%q: err = %v, want io.ErrUnexpectedEOF", wire, err)
		}
	}
	boom := errors.New("boom")
	d := &dotReader{br: bufio.NewReader(io.MultiReader(strings.NewReader("a\r\n"), iotest.ErrReader(boom)))}
	if _, err := io.ReadAll(d); !errors.Is(err, boom) {
		t.Errorf("err = %v, want the reader's error", err)
	}
}

// FuzzDotReader feeds any bytes to the unstuffing reader, through small
// buffers and short reads: it must not panic, must never return more than
// it was given, must agree with the reference, and must give back exactly
// the content of any properly stuffed response.
func FuzzDotReader(f *testing.F) {
	for _, tt := range dotCases {
		f.Add([]byte(tt.wire))
	}
	f.Add([]byte("..\r\n.\r\r\n.\n"))
	readers := []func(io.Reader) io.Reader{
		iotest.HalfReader, iotest.OneByteReader, func(r io.Reader) io.Reader { return r },
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// data as a response off the wire.
		want, ok := unstuffRef(data)
		for _, wrap := range readers[:2] {
			d := &dotReader{br: bufio.NewReaderSize(wrap(bytes.NewReader(data)), 16)}
			got, err := io.ReadAll(d)
			if len(got) > len(data) {
				t.Fatalf("%q: %d bytes out of %d in", data, len(got), len(data))
			}
			if ok != (err == nil) {
				t.Fatalf("%q: err = %v, reference terminated = %v", data, err, ok)
			}
			if ok && !bytes.Equal(got, want) {
				t.Fatalf("%q: got %q, want %q", data, got, want)
			}
			if !ok && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("%q: err = %v, want io.ErrUnexpectedEOF", data, err)
			}
		}

		// data as message content, stuffed (stuff adds a final CRLF if
		// needed, as servers do): it must come back exactly, and the reader
		// must stop at the terminator.
		body := data
		if len(body) > 0 && body[len(body)-1] != '\n' {
			body = append(slices.Clip(body), '\r', '\n')
		}
		wire := []byte(stuff(string(data)) + "+OK next response")
		for _, wrap := range readers {
			src := bytes.NewReader(wire)
			br := bufio.NewReaderSize(wrap(src), 16)
			got, err := io.ReadAll(&dotReader{br: br})
			if err != nil || !bytes.Equal(got, body) {
				t.Fatalf("content %q: got %q, %v", body, got, err)
			}
			rest, _ := io.ReadAll(br)
			if string(rest) != "+OK next response" {
				t.Fatalf("content %q: the reader consumed past the terminator, left %q", body, rest)
			}
		}
	})
}

// benchWire is 1 MiB of typical mail: 76-character lines, some stuffed.
func benchWire() []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < 1<<20; i++ {
		if i%10 == 0 {
			b.WriteString("..")
		}
		b.WriteString(strings.Repeat("abcdefghij", 7) + "klmnop\r\n")
	}
	b.WriteString(".\r\n")
	return b.Bytes()
}

func BenchmarkDotReader(b *testing.B) {
	wire := benchWire()
	src := bytes.NewReader(wire)
	br := bufio.NewReaderSize(src, streamBufSize)
	buf := make([]byte, 32<<10)
	b.SetBytes(int64(len(wire)))
	b.ReportAllocs()
	for b.Loop() {
		src.Reset(wire)
		br.Reset(src)
		d := dotReader{br: br}
		for {
			_, err := d.Read(buf)
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
	}
}

func TestDotReaderAllocs(t *testing.T) {
	wire := benchWire()
	src := bytes.NewReader(wire)
	br := bufio.NewReaderSize(src, streamBufSize)
	buf := make([]byte, 32<<10)
	allocs := testing.AllocsPerRun(5, func() {
		src.Reset(wire)
		br.Reset(src)
		d := dotReader{br: br}
		for {
			if _, err := d.Read(buf); err != nil {
				break
			}
		}
	})
	if allocs > 0 {
		t.Errorf("%v allocations per 1 MiB message, want 0", allocs)
	}
}

// FuzzStuffedReader checks the reader that keeps the dot-stuffing against
// dotReader: on any input both end at the same byte, with the same
// outcome, and unstuffing what stuffedReader returns gives exactly what
// dotReader returns.
func FuzzStuffedReader(f *testing.F) {
	for _, tt := range dotCases {
		f.Add([]byte(tt.wire))
	}
	f.Add([]byte("..\r\n.\r\r\n.\n"))
	f.Add([]byte(".\r"))
	f.Add([]byte("a\n.b\r\n..\r\n.\r\nrest"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, wrap := range []func(io.Reader) io.Reader{iotest.OneByteReader, iotest.HalfReader, func(r io.Reader) io.Reader { return r }} {
			dsrc, ssrc := bytes.NewReader(data), bytes.NewReader(data)
			dbr := bufio.NewReaderSize(wrap(dsrc), 16)
			want, werr := io.ReadAll(&dotReader{br: dbr})
			sbr := bufio.NewReaderSize(wrap(ssrc), 16)
			stuffed, serr := io.ReadAll(&stuffedReader{br: sbr, lineStart: true})
			if (werr == nil) != (serr == nil) {
				t.Fatalf("%q: dotReader err %v, stuffedReader err %v", data, werr, serr)
			}
			if werr != nil {
				continue
			}
			if got, _ := unstuffRef(append(slices.Clip(stuffed), terminatorFor(stuffed)...)); !bytes.Equal(got, want) {
				t.Fatalf("%q: stuffedReader gave %q, unstuffed %q; dotReader gave %q", data, stuffed, got, want)
			}
			// Read ahead differs; what is left unread must not.
			if dr, sr := dsrc.Len()+dbr.Buffered(), ssrc.Len()+sbr.Buffered(); dr != sr {
				t.Fatalf("%q: after the body dotReader left %d bytes, stuffedReader %d", data, dr, sr)
			}
		}
	})
}

// terminatorFor is the terminating line that makes stuffed a response for
// unstuffRef.
func terminatorFor(stuffed []byte) []byte {
	if len(stuffed) == 0 || stuffed[len(stuffed)-1] == '\n' {
		return []byte(".\r\n")
	}
	return []byte("\r\n.\r\n")
}
