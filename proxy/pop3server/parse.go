package pop3server

import (
	"bytes"
	"math"
	"strings"
)

// splitCommand splits a command line into its keyword, upper-cased in place
// (RFC 1939 §3), and the raw argument text after the first space.
func splitCommand(line []byte) (verb, arg []byte) {
	verb, arg, _ = bytes.Cut(line, []byte{' '})
	for i, b := range verb {
		if 'a' <= b && b <= 'z' {
			verb[i] = b - ('a' - 'A')
		}
	}
	return verb, arg
}

// fields splits arguments on runs of spaces, though RFC 1939 §3 asks for
// single ones.
func fields(arg string) []string {
	return strings.FieldsFunc(arg, func(r rune) bool { return r == ' ' })
}

// maxMsgNumberDigits bounds message numbers below a billion.
const maxMsgNumberDigits = 9

func parseMsgNumber(s string) (int, bool) {
	if s == "" || len(s) > maxMsgNumberDigits {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int(s[i]-'0')
	}
	return n, n > 0
}

// parseLineCount parses the line count of TOP. Values beyond int saturate,
// as any count past the message means all of it (RFC 1939 §7), and
// fetchmail sends huge ones (docs/clients.md, fetchmail).
func parseLineCount(s string) (int, bool) {
	if s == "" {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		d := int(s[i] - '0')
		if n > (math.MaxInt-d)/10 {
			n = math.MaxInt
			continue
		}
		n = n*10 + d
	}
	return n, true
}

// maxUIDLength keeps the answer to "UIDL n", "+OK <n> <uid>" CRLF, within
// the 512 octets RFC 1939 §3 and RFC 2449 §4 allow a first line.
const maxUIDLength = maxResponseLine - len("+OK ") - maxMsgNumberDigits - len(" ") - len("\r\n")

// validUID allows 1 to maxUIDLength octets in 0x21-0x7E, so nothing can
// split a UIDL line or inject one. Longer ones than the 70 octets of
// RFC 1939 §7 pass: some servers send them, clients cope, and refusing one
// would fail every UIDL of the session, leaving clients that keep mail on
// the server unable to synchronise.
func validUID(uid string) bool {
	if uid == "" || len(uid) > maxUIDLength {
		return false
	}
	for i := 0; i < len(uid); i++ {
		if uid[i] < 0x21 || uid[i] > 0x7e {
			return false
		}
	}
	return true
}
