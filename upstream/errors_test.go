package upstream

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"unicode/utf8"
)

func TestParseServerError(t *testing.T) {
	tests := []struct {
		line string
		want ServerError
	}{
		{"-ERR [IN-USE] maildrop locked\r\n", ServerError{"IN-USE", "maildrop locked"}},
		{"-ERR [SYS/TEMP] try later", ServerError{"SYS/TEMP", "try later"}},
		{"-ERR [SYS/PERM]", ServerError{"SYS/PERM", ""}},
		{"-ERR [X-VENDOR/sub-code] text", ServerError{"X-VENDOR/sub-code", "text"}},
		{"-ERR [SYS TEMP] x", ServerError{"", "[SYS TEMP] x"}}, // no space in rchar
		{"-ERR [AUTH]no space", ServerError{"AUTH", "no space"}},
		{"-ERR", ServerError{}},
		{"-ERR ", ServerError{}},
		{"-ERR plain text", ServerError{"", "plain text"}},
		// Not well-formed per RFC 2449 §3: the brackets stay in Text.
		{"-ERR [] empty", ServerError{"", "[] empty"}},
		{"-ERR [SYS//TEMP] x", ServerError{"", "[SYS//TEMP] x"}},
		{"-ERR [SYS/] x", ServerError{"", "[SYS/] x"}},
		{"-ERR [IN-USE x", ServerError{"", "[IN-USE x"}},
		{"-ERR [IN\x01USE] x", ServerError{"", "[IN?USE] x"}},
		{"-ERR  [IN-USE] two spaces", ServerError{"", "[IN-USE] two spaces"}},
		{"-ERR text [IN-USE] later", ServerError{"", "text [IN-USE] later"}},
		// Sanitising.
		{"-ERR bad\x00\x1b[31mred\x7f", ServerError{"", "bad??[31mred?"}},
		{"-ERR caf\xc3\xa9 \xff", ServerError{"", "caf\u00e9 ?"}},
		{"-ERR c1 \xc2\x85", ServerError{"", "c1 ?"}},
	}
	for _, tt := range tests {
		if got := parseServerError([]byte(tt.line)); *got != tt.want {
			t.Errorf("parseServerError(%q) = %+v, want %+v", tt.line, *got, tt.want)
		}
	}
}

func TestServerErrorTruncated(t *testing.T) {
	long := "-ERR [SYS/TEMP] " + strings.Repeat("\u00e9", 1000)
	e := parseServerError([]byte(long))
	if len(e.Text) > maxErrorText || !utf8.ValidString(e.Text) || e.Code != "SYS/TEMP" {
		t.Errorf("Text is %d bytes, valid UTF-8 %v, code %q", len(e.Text), utf8.ValidString(e.Text), e.Code)
	}
	if line := "-ERR [SYS/TEMP] " + e.Text + "\r\n"; len(line) > 512 {
		t.Errorf("relayed line is %d octets, over RFC 1939's 512", len(line))
	}
}

func TestServerErrorString(t *testing.T) {
	for _, tt := range []struct {
		e    ServerError
		want string
	}{
		{ServerError{"IN-USE", "locked"}, "-ERR [IN-USE] locked"},
		{ServerError{"", "bad"}, "-ERR bad"},
		{ServerError{"AUTH", ""}, "-ERR [AUTH]"},
		{ServerError{}, "-ERR"},
	} {
		if got := tt.e.Error(); got != tt.want {
			t.Errorf("%+v.Error() = %q, want %q", tt.e, got, tt.want)
		}
	}
}

func TestConnError(t *testing.T) {
	err := connError(io.ErrUnexpectedEOF)
	if !errors.Is(err, ErrConnection) || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("connError lost a wrapped error: %v", err)
	}
	if again := connError(fmt.Errorf("ctx: %w", err)); again.Error() != "ctx: "+io.ErrUnexpectedEOF.Error() || !errors.Is(again, ErrConnection) {
		t.Errorf("connError changed the text, or lost ErrConnection: %v", again)
	}
	// The step and address are the caller's to say, once.
	_, dialErr := net.Dial("tcp", "127.0.0.1:1")
	if got := connError(dialErr); got.Error() != "connection refused" || !errors.Is(got, syscall.ECONNREFUSED) {
		t.Errorf("connError(%q) = %q", dialErr, got)
	}
	if !errors.Is(connError(nil), ErrConnection) {
		t.Error("connError(nil)")
	}
}

func TestLoginError(t *testing.T) {
	var err error = &LoginError{Reason: "empty user name"}
	if !errors.Is(err, ErrInvalidLogin) || err.Error() != "invalid login: empty user name" {
		t.Errorf("LoginError: %v", err)
	}
}

// A response code is relayed in "-ERR [CODE] text", so it is bounded like
// the text: the longest kept code with the longest text makes a line of
// exactly RFC 1939 §3's 512 octets. A longer code cannot be genuine (RFC
// 2449 §8 and RFC 3206 define codes of a dozen octets) and is dropped,
// brackets and all.
func TestServerErrorCodeBounded(t *testing.T) {
	text := strings.Repeat("t", 600)
	for _, tt := range []struct {
		codeLen int
		kept    bool
	}{{8, true}, {102, true}, {103, false}, {900, false}} {
		code := strings.Repeat("C", tt.codeLen)
		e := parseServerError([]byte("-ERR [" + code + "] " + text))
		if tt.kept != (e.Code == code) || (!tt.kept && e.Code != "") {
			t.Errorf("code of %d octets: Code = %q (%d octets), want kept=%v", tt.codeLen, e.Code, len(e.Code), tt.kept)
		}
		if strings.Contains(e.Text, "[") {
			t.Errorf("code of %d octets: the bracketed part is left in Text", tt.codeLen)
		}
		if line := e.Error() + "\r\n"; len(line) > 512 {
			t.Errorf("code of %d octets: relayed line is %d octets, over RFC 1939's 512", tt.codeLen, len(line))
		}
	}
}

// On the RETR/TOP path the status line is read by the streaming reader,
// whose buffer is 64 KiB: the same bound applies.
func TestServerErrorCodeBoundedRetr(t *testing.T) {
	code := strings.Repeat("C", 900)
	c, srv := loggedIn(t, `
		C: RETR 1
		S: -ERR [`+code+`] no such message
		C: QUIT
		S: +OK`, Options{})
	_, err := c.Retr(1)
	var se *ServerError
	if !errors.As(err, &se) || se.Code != "" || se.Text != "no such message" {
		t.Fatalf("RETR = %v, want a ServerError without the overlong code", err)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	srv.Wait(t)
}
