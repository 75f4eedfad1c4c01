package pop3server

import (
	"math"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseMsgNumber(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
		ok   bool
	}{
		{"1", 1, true},
		{"42", 42, true},
		{"007", 7, true},
		{"999999999", 999999999, true},
		{"1000000000", 0, false},
		{"0", 0, false},
		{"", 0, false},
		{"-1", 0, false},
		{"+1", 0, false},
		{" 1", 0, false},
		{"1x", 0, false},
		{"１", 0, false}, // fullwidth digit
	} {
		got, ok := parseMsgNumber(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseMsgNumber(%q) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestParseLineCount(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
		ok   bool
	}{
		{"0", 0, true},
		{"10", 10, true},
		{"99999999", 99999999, true},
		{"9223372036854775807", math.MaxInt, true},
		{"9223372036854775808", math.MaxInt, true},
		{strings.Repeat("9", 100), math.MaxInt, true},
		{"", 0, false},
		{"-1", 0, false},
		{"1e3", 0, false},
	} {
		got, ok := parseLineCount(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseLineCount(%q) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestSplitCommand(t *testing.T) {
	verb, arg := splitCommand([]byte("pAsS my  pass "))
	if string(verb) != "PASS" || string(arg) != "my  pass " {
		t.Errorf("splitCommand = %q, %q", verb, arg)
	}
}

func TestAppendErrorLine(t *testing.T) {
	for _, tc := range []struct {
		err  *Error
		want string
	}{
		{&Error{Message: "no such message"}, "-ERR no such message\r\n"},
		{&Error{Code: "IN-USE", Message: "locked"}, "-ERR [IN-USE] locked\r\n"},
		{&Error{Code: "SYS/TEMP"}, "-ERR [SYS/TEMP]\r\n"},
		{&Error{}, "-ERR\r\n"},
		{&Error{Code: "A]B", Message: "x"}, "-ERR x\r\n"},
		{&Error{Code: "SYS//TEMP", Message: "x"}, "-ERR x\r\n"},
		{&Error{Code: "SYS/", Message: "x"}, "-ERR x\r\n"},
		{&Error{Code: "A B", Message: "x"}, "-ERR x\r\n"},
		{&Error{Message: "[[AUTH] x"}, "-ERR AUTH] x\r\n"},
		{&Error{Message: "a\rb\nc\x00d"}, "-ERR abcd\r\n"},
	} {
		if got := string(appendErrorLine(nil, tc.err)); got != tc.want {
			t.Errorf("appendErrorLine(%+v) = %q, want %q", tc.err, got, tc.want)
		}
	}

	// Long messages are cut at 512 octets, CRLF included (RFC 1939 §3),
	// on a UTF-8 boundary.
	for _, msg := range []string{strings.Repeat("x", 600), strings.Repeat("é", 300), strings.Repeat("\r\n", 300) + strings.Repeat("y", 600)} {
		line := string(appendErrorLine(nil, &Error{Code: "SYS/TEMP", Message: msg}))
		body := strings.TrimSuffix(line, "\r\n")
		if len(line) > 512 || len(line) < 510 || strings.ContainsAny(body, "\r\n") || !utf8.ValidString(line) {
			t.Errorf("line of %d octets for a %d-octet message: %q", len(line), len(msg), line)
		}
	}
}

// TestValidUID checks that unique-ids are refused only for what would
// break the client's parsing of a UIDL line, not for RFC 1939 §7's
// 70-octet limit, which servers exceed.
func TestValidUID(t *testing.T) {
	for _, tc := range []struct {
		uid  string
		want bool
	}{
		{"a", true},
		{"!~", true},
		{strings.Repeat("u", 70), true},
		{strings.Repeat("u", 71), true},
		{strings.Repeat("u", 200), true},
		{strings.Repeat("u", maxUIDLength), true},
		{strings.Repeat("u", maxUIDLength+1), false},
		{"", false},
		{"a b", false},
		{"a\tb", false},
		{"a\rb", false},
		{"a\nb", false},
		{"a\x00b", false},
		{"a\x7fb", false},
		{"é", false},
	} {
		if got := validUID(tc.uid); got != tc.want {
			t.Errorf("validUID(%.20q, %d octets) = %v, want %v", tc.uid, len(tc.uid), got, tc.want)
		}
	}
	// The longest unique-id still fits the single-line UIDL answer with
	// the largest message number into 512 octets (RFC 1939 §3).
	if n := len("+OK 999999999 ") + maxUIDLength + len("\r\n"); n > maxResponseLine {
		t.Errorf("UIDL answer can reach %d octets", n)
	}
}
