package pop3servertest

import "testing"

func TestMatch(t *testing.T) {
	for _, tc := range []struct {
		pattern, s string
		want       bool
	}{
		{"+OK", "+OK", true},
		{"+OK", "+OK ", false},
		{"+OK *", "+OK 2 320", true},
		{"-ERR [SYS/TEMP] *", "-ERR [SYS/TEMP] internal error", true},
		{"-ERR [SYS/TEMP] *", "-ERR [AUTH] x", false},
		{"+OK <*@*>", "+OK <1.2.3@host>", true},
		{"a*b*c", "abc", true},
		{"a*b*c", "acb", false},
	} {
		if got := Match(tc.pattern, tc.s); got != tc.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tc.pattern, tc.s, got, tc.want)
		}
	}
}
