package upstream

import (
	"errors"
	"fmt"
	"io"
	"strings"
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
	if again := connError(fmt.Errorf("ctx: %w", err)); strings.Count(again.Error(), ErrConnection.Error()) != 1 {
		t.Errorf("ErrConnection wrapped twice: %v", again)
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
