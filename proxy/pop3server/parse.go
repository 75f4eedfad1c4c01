package pop3server

import (
	"bytes"
	"math"
	"strings"
)

// splitCommand splits a command line into its keyword, upper-cased in place
// (keywords are case-insensitive, RFC 1939 §3), and the raw argument text
// after the first space.
func splitCommand(line []byte) (verb, arg []byte) {
	verb, arg, _ = bytes.Cut(line, []byte{' '})
	for i, b := range verb {
		if 'a' <= b && b <= 'z' {
			verb[i] = b - ('a' - 'A')
		}
	}
	return verb, arg
}

// fields splits arguments on runs of spaces; RFC 1939 §3 asks for single
// spaces, but lenient input costs nothing here. Trailing spaces vanish.
func fields(arg string) []string {
	return strings.FieldsFunc(arg, func(r rune) bool { return r == ' ' })
}

// maxMsgNumberDigits bounds message numbers; a maildrop with more than a
// billion messages is not a real one.
const maxMsgNumberDigits = 9

// parseMsgNumber parses a message number: decimal digits only (no sign, no
// spaces), positive, and of sane length (RFC 1939 §3, §5).
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

// parseLineCount parses the line count of TOP (RFC 1939 §7): a non-negative
// decimal number. Values beyond int saturate, since any count above the
// message's length means the whole message (fetchmail sends 99999999).
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

// validUID checks a unique-id (RFC 1939 §7): 1 to 70 octets in 0x21-0x7E.
// Anything else would break client parsing or inject lines.
func validUID(uid string) bool {
	if uid == "" || len(uid) > 70 {
		return false
	}
	for i := 0; i < len(uid); i++ {
		if uid[i] < 0x21 || uid[i] > 0x7e {
			return false
		}
	}
	return true
}
