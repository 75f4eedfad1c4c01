//go:build linux

package chaos

import (
	"strings"
	"testing"
)

const (
	cleanMsg    = "Subject: hi\r\n\r\nhello\r\n.line with a dot\r\n"
	infectedMsg = "Subject: bad\r\n\r\nINFECTED-BODY\r\n"
	notice      = "X-Virus-Status: Infected\r\nX-Virus-Name: Test\r\nSubject: [VIRUS REMOVED] bad\r\n\r\nremoved\r\n"
)

var testExpect = Expect{
	Added:        "X-Scanned-By: pop3proxy\r\n",
	AddedPrefix:  []string{"X-Virus-Scanned", "X-Spam-Status"},
	Unscanned:    "X-Pop3proxy-Unscanned",
	NoticeMarker: "X-Virus-Status: Infected\r\n",
}

func testOracle() *Oracle {
	o := New(testExpect)
	o.Mailbox("u", map[string]Message{
		"c": {Wire: []byte(cleanMsg)},
		"v": {Wire: []byte(infectedMsg), Infected: true},
	})
	return o
}

// both is the server's state when nothing was deleted.
var both = map[string]map[string]bool{"u": {"c": true, "v": true}}

func TestOracleAcceptsCorrectRuns(t *testing.T) {
	for name, run := range map[string]func(o *Oracle) map[string]map[string]bool{
		"nothing happened": func(o *Oracle) map[string]map[string]bool { return both },
		"delivered with the chain's fields, kept": func(o *Oracle) map[string]map[string]bool {
			o.Delivered("u", "c", []byte("X-Spam-Status: No\r\nX-Scanned-By: pop3proxy\r\nX-Virus-Scanned: ok\r\n"+cleanMsg), "")
			return both
		},
		"delivered and deleted": func(o *Oracle) map[string]map[string]bool {
			o.Delivered("u", "c", []byte("X-Scanned-By: pop3proxy\r\n"+cleanMsg), "")
			o.Committed("u", []string{"c"}, "")
			return map[string]map[string]bool{"u": {"v": true}}
		},
		"DELE and QUIT, but the server kept it": func(o *Oracle) map[string]map[string]bool {
			o.Delivered("u", "c", []byte("X-Scanned-By: pop3proxy\r\n"+cleanMsg), "")
			o.Committed("u", []string{"c"}, "")
			return both
		},
		"infected replaced by the notice": func(o *Oracle) map[string]map[string]bool {
			o.Delivered("u", "v", []byte(notice), "")
			o.Headers("u", "v", []byte(notice[:strings.Index(notice, "\r\n\r\n")+4]))
			return both
		},
		"unchecked and marked, without the chain's fields": func(o *Oracle) map[string]map[string]bool {
			o.Delivered("u", "c", []byte("X-Pop3proxy-Unscanned: too large\r\n"+cleanMsg), "")
			o.Delivered("u", "v", []byte("X-Pop3proxy-Unscanned: too large\r\n"+infectedMsg), "")
			return both
		},
		"headers with the chain's fields": func(o *Oracle) map[string]map[string]bool {
			o.Headers("u", "c", []byte("X-Scanned-By: pop3proxy\r\nSubject: hi\r\n\r\n"))
			return both
		},
	} {
		t.Run(name, func(t *testing.T) {
			o := testOracle()
			after := run(o)
			if v, checked := o.Check(after); len(v) != 0 || checked != 2 {
				t.Fatalf("Check = %q, %d checked; want no violation, 2 checked", v, checked)
			}
		})
	}
}

func TestOracleCatchesEveryKindOfLoss(t *testing.T) {
	for name, tc := range map[string]struct {
		run  func(o *Oracle) map[string]map[string]bool
		want string
	}{
		"gone without DELE": {
			run:  func(o *Oracle) map[string]map[string]bool { return map[string]map[string]bool{"u": {"v": true}} },
			want: "gone from the server without DELE and QUIT",
		},
		"deleted, never received whole": {
			run: func(o *Oracle) map[string]map[string]bool {
				o.Committed("u", []string{"c"}, "")
				return map[string]map[string]bool{"u": {"v": true}}
			},
			want: "deleted but never received completely",
		},
		"truncated": {
			run: func(o *Oracle) map[string]map[string]bool {
				o.Delivered("u", "c", []byte("X-Scanned-By: pop3proxy\r\n"+cleanMsg[:20]), "")
				return both
			},
			want: "neither the original",
		},
		"altered byte": {
			run: func(o *Oracle) map[string]map[string]bool {
				o.Delivered("u", "c", []byte("X-Scanned-By: pop3proxy\r\n"+strings.Replace(cleanMsg, ".line", "line", 1)), "")
				return both
			},
			want: "neither the original",
		},
		"infected slipped through": {
			run: func(o *Oracle) map[string]map[string]bool {
				o.Delivered("u", "v", []byte("X-Scanned-By: pop3proxy\r\n"+infectedMsg), "")
				return both
			},
			want: "infected message was delivered unmarked",
		},
		"clean replaced by a notice": {
			run: func(o *Oracle) map[string]map[string]bool {
				o.Delivered("u", "c", []byte(notice), "")
				return both
			},
			want: "clean message was replaced",
		},
		"chain's fields missing": {
			run: func(o *Oracle) map[string]map[string]bool {
				o.Delivered("u", "c", []byte(cleanMsg), "")
				return both
			},
			want: "fields the chain adds are missing",
		},
		"unexpected field in front": {
			run: func(o *Oracle) map[string]map[string]bool {
				o.Delivered("u", "c", []byte("X-Scanned-By: pop3proxy\r\nX-Other: 1\r\n"+cleanMsg), "")
				return both
			},
			want: `unexpected line before the message: "X-Other: 1\r\n"`,
		},
		"another message's header": {
			run: func(o *Oracle) map[string]map[string]bool {
				o.Headers("u", "c", []byte("X-Scanned-By: pop3proxy\r\nSubject: bad\r\n\r\n"))
				return both
			},
			want: "TOP n 0: delivered",
		},
		"a message that was never there": {
			run: func(o *Oracle) map[string]map[string]bool {
				o.Delivered("u", "x", []byte(cleanMsg), "")
				return both
			},
			want: "never in the mailbox",
		},
	} {
		t.Run(name, func(t *testing.T) {
			o := testOracle()
			o.Fault("upstream-cut")
			v, _ := o.Check(tc.run(o))
			if len(v) != 1 || !strings.Contains(v[0], tc.want) || !strings.Contains(v[0], "upstream-cut") {
				t.Fatalf("Check = %q; want one violation about %q that names the fault", v, tc.want)
			}
		})
	}
}
