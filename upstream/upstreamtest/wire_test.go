package upstreamtest

import (
	"bytes"
	"testing"
)

// wireCases are what Dovecot 2.3.19.1 sent for these stored messages (see
// the package doc); TestDovecotStorageEdgeCases checks them against the
// running daemon.
var wireCases = []struct {
	name       string
	stored     string
	wire       string
	listedSize int64
}{
	{"crlf", "Subject: a\r\n\r\nbody\r\n", "Subject: a\r\n\r\nbody\r\n", 20},
	{"lf", "Subject: a\n\nbody\n", "Subject: a\r\n\r\nbody\r\n", 20},
	{"mixed", "A: b\r\n\nx\n", "A: b\r\n\r\nx\r\n", 11},
	{"bare cr kept", "A: b\r\n\r\nx\ry\r\n", "A: b\r\n\r\nx\ry\r\n", 13},
	{"unterminated", "A: b\n\nno newline", "A: b\r\n\r\nno newline\r\n", 18},
	{"unterminated crlf", "A: b\r\n\r\nno newline", "A: b\r\n\r\nno newline\r\n", 18},
	{"ends in cr", "A: b\r\n\r\nx\r", "A: b\r\n\r\nx\r\r\n", 10},
	{"one byte", "x", "x\r\n", 1},
	{"empty", "", "\r\n", 0},
	{"leading lf", "\nx\n", "\r\nx\r\n", 5},
	{"8-bit and nul", "A: b\n\n\xff\x00\n", "A: b\r\n\r\n\xff\x00\r\n", 12},
}

func TestWireForm(t *testing.T) {
	for _, c := range wireCases {
		t.Run(c.name, func(t *testing.T) {
			if got := WireForm([]byte(c.stored)); !bytes.Equal(got, []byte(c.wire)) {
				t.Errorf("WireForm(%q) = %q, want %q", c.stored, got, c.wire)
			}
			if got := ListSize([]byte(c.stored)); got != c.listedSize {
				t.Errorf("ListSize(%q) = %d, want %d", c.stored, got, c.listedSize)
			}
		})
	}
}

func TestWireFormDoesNotModifyInput(t *testing.T) {
	in := []byte("a\nb")
	WireForm(in)
	if string(in) != "a\nb" {
		t.Fatalf("input changed to %q", in)
	}
}
