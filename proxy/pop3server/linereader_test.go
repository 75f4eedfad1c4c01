package pop3server

import (
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"
)

func TestLineReader(t *testing.T) {
	in := "USER a\r\nPASS b c \r\nnoop\n\r\n" + strings.Repeat("x", 253) + "\r\n" +
		strings.Repeat("y", 254) + "\r\n" + strings.Repeat("z", 254) + "\n" +
		strings.Repeat("w", 10000) + "\r\nQUIT\r\nPARTIAL"
	want := []string{"USER a", "PASS b c ", "noop", "", strings.Repeat("x", 253), "too long", strings.Repeat("z", 254), "too long", "QUIT", "EOF"}
	for _, oneByte := range []bool{false, true} {
		var r io.Reader = strings.NewReader(in)
		if oneByte {
			r = iotest.OneByteReader(r)
		}
		lr := newLineReader(r, 255, 255)
		var got []string
		for {
			line, err := lr.readLine()
			if errors.Is(err, errLineTooLong) {
				got = append(got, "too long")
				continue
			}
			if err == io.EOF {
				got = append(got, "EOF")
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, string(line))
		}
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("one byte %v: got %q, want %q", oneByte, got, want)
		}
	}
}

// endlessLine yields n octets of "a" and then a short command.
type endlessLine struct {
	n    int
	tail string
}

func (r *endlessLine) Read(p []byte) (int, error) {
	if r.n > 0 {
		k := min(len(p), r.n)
		for i := range p[:k] {
			p[i] = 'a'
		}
		r.n -= k
		return k, nil
	}
	if r.tail == "" {
		return 0, io.EOF
	}
	k := copy(p, r.tail)
	r.tail = r.tail[k:]
	return k, nil
}

// TestLineReaderMemory checks that skipping a 1 MB line does not buffer it.
func TestLineReaderMemory(t *testing.T) {
	const lineSize = 1 << 20
	lr := newLineReader(&endlessLine{n: lineSize, tail: "\r\nNOOP\r\n"}, DefaultMaxLineLength, DefaultMaxLineLength)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err1 := lr.readLine()
	line, err2 := lr.readLine()
	runtime.ReadMemStats(&after)
	if !errors.Is(err1, errLineTooLong) || err2 != nil || string(line) != "NOOP" {
		t.Fatalf("got %v, then %q, %v; want errLineTooLong, then NOOP", err1, line, err2)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<10 {
		t.Errorf("reading a %d-octet line allocated %d octets", lineSize, grew)
	}
}

func TestLineBuffered(t *testing.T) {
	lr := newLineReader(strings.NewReader("A\r\nB\nC"), 255, 255)
	var got []bool
	for i := 0; i < 2; i++ {
		if _, err := lr.readLine(); err != nil {
			t.Fatal(err)
		}
		got = append(got, lr.lineBuffered())
	}
	if got[0] != true || got[1] != false {
		t.Errorf("lineBuffered after A, B = %v, want [true false]", got)
	}
}
