package pop3server

import (
	"bufio"
	"bytes"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
)

var dotWriterTests = []struct {
	name, in, want string
}{
	{"empty", "", ".\r\n"},
	{"plain", "a\r\nb\r\n", "a\r\nb\r\n.\r\n"},
	{"lone dot line", "a\r\n.\r\nb\r\n", "a\r\n..\r\nb\r\n.\r\n"},
	{"dot only", ".", "..\r\n.\r\n"},
	{"dot line only", ".\r\n", "..\r\n.\r\n"},
	{"two dots", "..\r\n", "...\r\n.\r\n"},
	{"leading dot", ".a\r\n.b\r\n", "..a\r\n..b\r\n.\r\n"},
	{"dot inside line", "a.b\r\n a.\r\n", "a.b\r\n a.\r\n.\r\n"},
	{"missing final CRLF", "a\r\nb", "a\r\nb\r\n.\r\n"},
	{"missing final CRLF after dot", "a\r\n.", "a\r\n..\r\n.\r\n"},
	{"final CR only", "a\r", "a\r\r\n.\r\n"},
	{"CRLF only", "\r\n", "\r\n.\r\n"},
	{"bare LF", "a\n.b\n", "a\n..b\n\r\n.\r\n"},
	{"bare LF dot line", "a\n.\nb\r\n", "a\n..\nb\r\n.\r\n"},
	{"CR is not a line end", "a\r.b\r\n", "a\r.b\r\n.\r\n"},
	{"8-bit", "\xff\xfe.\r\n.\x80\r\n", "\xff\xfe.\r\n..\x80\r\n.\r\n"},
	{"NUL", "\x00.\r\n.\x00\r\n", "\x00.\r\n..\x00\r\n.\r\n"},
}

func stuff(t *testing.T, chunks ...string) string {
	t.Helper()
	var out bytes.Buffer
	d := newDotWriter(&out)
	for _, c := range chunks {
		if n, err := d.Write([]byte(c)); n != len(c) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", c, n, err)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

func TestDotWriter(t *testing.T) {
	for _, tc := range dotWriterTests {
		t.Run(tc.name, func(t *testing.T) {
			if got := stuff(t, tc.in); got != tc.want {
				t.Errorf("at once: got %q, want %q", got, tc.want)
			}
			bytewise := make([]string, len(tc.in))
			for i := range tc.in {
				bytewise[i] = tc.in[i : i+1]
			}
			if got := stuff(t, bytewise...); got != tc.want {
				t.Errorf("byte by byte: got %q, want %q", got, tc.want)
			}
			// Every split point, so a line-starting "." lands on each
			// chunk boundary.
			for i := 0; i <= len(tc.in); i++ {
				if got := stuff(t, tc.in[:i], "", tc.in[i:]); got != tc.want {
					t.Errorf("split at %d: got %q, want %q", i, got, tc.want)
				}
			}
		})
	}
}

// unstuff undoes dot-stuffing as a client does and checks that nothing
// before the terminator could be taken for it, with lines split on CRLF or LF.
func unstuff(t *testing.T, out string) string {
	t.Helper()
	if out == ".\r\n" {
		return ""
	}
	if !strings.HasSuffix(out, "\r\n.\r\n") {
		t.Fatalf("output %q does not end in CRLF.CRLF", out)
	}
	body := out[:len(out)-len(".\r\n")]
	var b strings.Builder
	for _, line := range strings.SplitAfter(body, "\n") {
		if strings.HasPrefix(line, ".") {
			if !strings.HasPrefix(line, "..") {
				t.Fatalf("output %q has an unstuffed line %q", out, line)
			}
			line = line[1:]
		}
		b.WriteString(line)
	}
	return b.String()
}

func TestDotWriterRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte(".\r\na\x80")
	for iter := 0; iter < 5000; iter++ {
		in := make([]byte, rng.IntN(40))
		for i := range in {
			in[i] = alphabet[rng.IntN(len(alphabet))]
		}
		var chunks []string
		for rest := string(in); rest != ""; {
			n := 1 + rng.IntN(len(rest))
			chunks = append(chunks, rest[:n])
			rest = rest[n:]
		}
		want := string(in)
		if want != "" && !strings.HasSuffix(want, "\r\n") {
			want += "\r\n"
		}
		if got := unstuff(t, stuff(t, chunks...)); got != want {
			t.Fatalf("round trip of %q in %q: got %q, want %q", in, chunks, got, want)
		}
	}
}

func TestDotWriterAllocs(t *testing.T) {
	msg := benchMessage(64<<10, 10)
	bw := bufio.NewWriterSize(io.Discard, writeBufferSize)
	d := newDotWriter(bw)
	allocs := testing.AllocsPerRun(20, func() {
		d.reset(bw)
		for p := msg; len(p) > 0; p = p[min(len(p), 4096):] {
			d.Write(p[:min(len(p), 4096)])
		}
		d.Close()
	})
	if allocs != 0 {
		t.Errorf("%v allocations per message, want 0", allocs)
	}
}

// benchMessage builds a message of about size bytes of 76-octet lines, one
// in every dotEvery starting with ".".
func benchMessage(size, dotEvery int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < size; i++ {
		if i%dotEvery == 0 {
			b.WriteByte('.')
		}
		b.WriteString(strings.Repeat("x", 74-b.Len()%7))
		b.WriteString("\r\n")
	}
	return b.Bytes()
}

func BenchmarkDotWriter(b *testing.B) {
	for _, bc := range []struct {
		name     string
		dotEvery int
	}{{"few dots", 100}, {"all dots", 1}} {
		b.Run(bc.name, func(b *testing.B) {
			msg := benchMessage(1<<20, bc.dotEvery)
			bw := bufio.NewWriterSize(io.Discard, writeBufferSize)
			d := newDotWriter(bw)
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			for b.Loop() {
				d.reset(bw)
				for p := msg; len(p) > 0; p = p[min(len(p), copyBufferSize):] {
					d.Write(p[:min(len(p), copyBufferSize)])
				}
				d.Close()
			}
		})
	}
}

// FuzzDotWriter checks that unstuffing the output as a client does gives
// the input, plus CRLF only if it was missing, with no early terminator.
// chunk > 0 writes the input in pieces, to cover the state kept across
// writes.
func FuzzDotWriter(f *testing.F) {
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8) {
		var chunks []string
		for rest := string(in); rest != ""; {
			n := len(rest)
			if chunk > 0 {
				n = min(n, int(chunk))
			}
			chunks = append(chunks, rest[:n])
			rest = rest[n:]
		}
		out := stuff(t, chunks...)
		want := string(in)
		if want != "" && !strings.HasSuffix(want, "\r\n") {
			want += "\r\n"
		}
		if got := unstuff(t, out); got != want {
			t.Fatalf("round trip of %q in %d-byte writes: got %q, want %q", in, chunk, got, want)
		}
		body := strings.TrimSuffix(out, ".\r\n")
		for _, line := range strings.SplitAfter(body, "\n") {
			if line == "." || line == ".\n" || line == ".\r\n" {
				t.Fatalf("output %q has a lone %q line before the terminator", out, line)
			}
		}
	})
}
