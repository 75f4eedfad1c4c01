package blocksender_test

import (
	"strings"
	"testing"

	_ "github.com/pop3proxy/pop3proxy/examples/filterplugin/blocksender"
	"github.com/pop3proxy/pop3proxy/filter"
	"github.com/pop3proxy/pop3proxy/filter/filtertest"
)

// The chain is built from YAML with filtertest, as pop3proxy builds it
// from the "filters:" list of its configuration: the test goes through the
// registration and the strict decoding too.

func msg(from string) string {
	return "Received: from mx by pop\r\n" + from + "Subject: offer\r\n\r\nbody\r\n"
}

func TestBlockSender(t *testing.T) {
	const tag = "- {type: blocksender, senders: [\"*@spam.example\", \"news?@*.example.com\", \"*/*@odd.example\"]}"
	const reject = "- {type: blocksender, action: reject, senders: [\"*@spam.example\"]}"
	for _, tc := range []struct {
		name, doc, from string
		outcome         filter.Outcome
		tagged          string // the X-Blocked-Sender value, if tagged
	}{
		{"plain address", tag, "From: bob@spam.example\r\n", filter.Deliver, "*@spam.example"},
		{"display name and case", tag, "From: \"Bob\" <Bob@SPAM.Example>\r\n", filter.Deliver, "*@spam.example"},
		{"encoded display name", tag, "From: =?UTF-8?B?QsO2Yg==?= <bob@spam.example>\r\n", filter.Deliver, "*@spam.example"},
		{"display name that looks like an address", tag, "From: \"bob@spam.example\" <bob@good.example>\r\n", filter.Deliver, ""},
		{"second address of the list", tag, "From: a@good.example, b@spam.example\r\n", filter.Deliver, "*@spam.example"},
		{"second From field", tag, "From: a@good.example\r\nFrom: b@spam.example\r\n", filter.Deliver, "*@spam.example"},
		{"folded field", tag, "From: Bob\r\n <bob@spam.example>\r\n", filter.Deliver, "*@spam.example"},
		{"malformed field", tag, "From: <<bob@spam.example>\r\n", filter.Deliver, "*@spam.example"},
		{"question mark is one character", tag, "From: news1@lists.example.com\r\n", filter.Deliver, "news?@*.example.com"},
		{"question mark is not two", tag, "From: news12@lists.example.com\r\n", filter.Deliver, ""},
		{"star matches a slash", tag, "From: a/b@odd.example\r\n", filter.Deliver, "*/*@odd.example"},
		{"subdomain is another domain", tag, "From: bob@mail.spam.example.org\r\n", filter.Deliver, ""},
		{"other sender", tag, "From: alice@good.example\r\n", filter.Deliver, ""},
		{"no From", tag, "", filter.Deliver, ""},
		{"reject", reject, "From: bob@spam.example\r\n", filter.Refuse, ""},
		{"reject spares others", reject, "From: alice@good.example\r\n", filter.Deliver, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch, err := filtertest.Chain(t, tc.doc)
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			in := msg(tc.from)
			res, got := filtertest.Run(t, ch, []byte(in), filter.Meta{User: "alice", Number: 1})
			if res.Outcome != tc.outcome {
				t.Fatalf("outcome %v, want %v", res.Outcome, tc.outcome)
			}
			if tc.outcome != filter.Deliver {
				if res.Reason != "sender blocked" {
					t.Errorf("reason %q", res.Reason)
				}
				return
			}
			want := in
			if tc.tagged != "" {
				want = "X-Blocked-Sender: " + tc.tagged + "\r\n" + in
			}
			if string(got) != want {
				t.Errorf("message\n got %q\nwant %q", got, want)
			}
		})
	}
}

// A header that does not parse is let through untouched.
func TestBlockSenderUnparsableHeader(t *testing.T) {
	ch, err := filtertest.Chain(t, "- {type: blocksender, action: reject, senders: [\"*\"]}")
	if err != nil {
		t.Fatal(err)
	}
	in := "From MAILER-DAEMON Mon Jan  1 00:00:00 2024\r\nFrom: bob@spam.example\r\n\r\nbody\r\n"
	res, got := filtertest.Run(t, ch, []byte(in), filter.Meta{})
	if res.Outcome != filter.Deliver || res.Changed || string(got) != in {
		t.Fatalf("Run = %v changed %v %q", res.Outcome, res.Changed, got)
	}
}

func TestBlockSenderConfigErrors(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{"- {type: blocksender}", "give at least one pattern"},
		{"- {type: blocksender, senders: [\"a b@x\"]}", "not a pattern"},
		{"- {type: blocksender, senders: [\"\"]}", "not a pattern"},
		{"- {type: blocksender, senders: [x], action: drop}", `action "drop"`},
		{"- {type: blocksender, sender: [x]}", "filters[0].sender: unknown key"},
	} {
		if _, err := filtertest.Chain(t, tc.doc); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Build(%s) error = %v, want %q", tc.doc, err, tc.want)
		}
	}
}
