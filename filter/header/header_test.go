package header_test

import (
	"context"
	"reflect"
	"strings"
	"testing"

	"github.com/pop3proxy/pop3proxy/filter"
	"github.com/pop3proxy/pop3proxy/filter/filtertest"
	"github.com/pop3proxy/pop3proxy/filter/header"
)

const headerMsg = "Received: from a by b\r\nX-Spam-Flag: YES\r\nSubject: Hi\r\n\tthere\r\nx-spam-flag: no\r\nX-Scanned-By: old\r\n\r\nbody\r\n.dot\r\n"

func TestHeaderEdits(t *testing.T) {
	for _, tc := range []struct {
		name, doc, want string
		fold            bool // the chain folds the added field: compare unfolded
	}{
		{
			name: "remove every field of the name, any case",
			doc:  "- {type: header, remove: [X-Spam-Flag]}",
			want: "Received: from a by b\r\nSubject: Hi\r\n\tthere\r\nX-Scanned-By: old\r\n\r\nbody\r\n.dot\r\n",
		},
		{
			name: "add goes to the top, sorted by name",
			doc:  "- {type: header, add: {X-B: two, X-A: one, X-C: three}}",
			want: "X-A: one\r\nX-B: two\r\nX-C: three\r\n" + headerMsg,
		},
		{
			name: "set replaces",
			doc:  "- {type: header, set: {x-scanned-by: pop3proxy}}",
			want: "x-scanned-by: pop3proxy\r\nReceived: from a by b\r\nX-Spam-Flag: YES\r\nSubject: Hi\r\n\tthere\r\nx-spam-flag: no\r\n\r\nbody\r\n.dot\r\n",
		},
		{
			name: "remove plus add of one name is set",
			doc:  "- {type: header, add: {X-Scanned-By: new}, remove: [X-SCANNED-BY]}",
			want: "X-Scanned-By: new\r\nReceived: from a by b\r\nX-Spam-Flag: YES\r\nSubject: Hi\r\n\tthere\r\nx-spam-flag: no\r\n\r\nbody\r\n.dot\r\n",
		},
		{
			name: "add and set together, sorted, removals first",
			doc:  "- {type: header, add: {X-Z: z}, set: {X-Scanned-By: me}, remove: [X-Spam-Flag, Received]}",
			want: "X-Scanned-By: me\r\nX-Z: z\r\nSubject: Hi\r\n\tthere\r\n\r\nbody\r\n.dot\r\n",
		},
		{
			name: "values keep UTF-8 and are folded when long",
			doc:  "- {type: header, add: {X-Note: \"gr\u00fc\u00df " + strings.Repeat("word ", 20) + "\"}}",
			want: "X-Note: gr\u00fc\u00df" + strings.Repeat(" word", 20) + "\r\n" + headerMsg,
			fold: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch, err := filtertest.Chain(t, tc.doc)
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			res, msg := filtertest.Run(t, ch, []byte(headerMsg), filter.Meta{Number: 1})
			if res.Outcome != filter.Deliver || !res.Changed {
				t.Fatalf("Run = %v changed=%v, want a changed delivery", res.Outcome, res.Changed)
			}
			got := string(msg)
			if tc.fold {
				if !strings.Contains(got, "\r\n\tword") {
					t.Errorf("long field not folded: %q", got)
				}
				got = strings.Replace(got, "\r\n\t", " ", 1)
			}
			if got != tc.want {
				t.Errorf("message\n got %q\nwant %q", msg, tc.want)
			}
		})
	}
}

// TestHeaderVerdict: removals come before additions, additions in name
// order, the same for every message, and a caller cannot change the next
// one's.
func TestHeaderVerdict(t *testing.T) {
	h := &header.Filter{
		Add:    map[string]string{"X-B": "b", "X-A": "a"},
		Set:    map[string]string{"X-S": "s"},
		Remove: []string{"X-R", "x-r"},
	}
	if err := h.Provision(filter.Env{Name: "header"}); err != nil {
		t.Fatal(err)
	}
	want := []filter.Edit{filter.Remove("X-R"), filter.Remove("X-S"), filter.Add("X-A", "a"), filter.Add("X-B", "b"), filter.Add("X-S", "s")}
	for range 2 {
		v, err := h.Judge(context.Background(), filter.NewMessage([]byte(headerMsg), filter.Meta{}))
		if err != nil || v.Action != filter.Continue {
			t.Fatalf("Judge = %v, %v", v.Action, err)
		}
		if !reflect.DeepEqual(v.Edits, want) {
			t.Fatalf("edits\n got %v\nwant %v", v.Edits, want)
		}
		v.Edits[0] = filter.Remove("From")
	}
}

func TestHeaderConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"nothing to do", "- {type: header}", "nothing to do"},
		{"unknown key", "- {type: header, ad: {X-A: b}}", "filters[0].ad: unknown key"},
		{"add is a mapping", "- {type: header, add: [X-A]}", "filters[0].add"},
		{"space in name", "- {type: header, add: {X A: b}}", `"X A" is not a field name`},
		{"colon in name", "- {type: header, remove: [\"X:A\"]}", `remove[0]: "X:A" is not a field name`},
		{"non-ASCII name", "- {type: header, set: {X-\u00c4: b}}", "is not a field name"},
		{"empty name", "- {type: header, remove: [\"\"]}", "empty field name"},
		{"empty value", "- {type: header, add: {X-A: }}", "X-A: empty value"},
		{"CRLF in value", "- {type: header, add: {X-A: \"b\\r\\nBcc: victim@example.com\"}}", "control character U+000D"},
		{"NUL in value", "- {type: header, add: {X-A: \"b\\0\"}}", "control character U+0000"},
		{"line too long", "- {type: header, add: {X-A: " + strings.Repeat("x", 995) + "}}", "X-A: field is 1000 octets"},
		{"same field twice, by case", "- {type: header, add: {X-A: one, x-a: two}}", "already added"},
		{"same field in add and set", "- {type: header, add: {X-A: one}, set: {X-A: two}}", "add: X-A: the field is already added by X-A (set)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := filtertest.Chain(t, tc.doc)
			if err == nil {
				t.Fatalf("Build accepted %s", tc.doc)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q lacks %q", err, tc.want)
			}
		})
	}
}

// TestHeaderReportsEveryProblem: every problem is reported at once, so that
// one start finds them all.
func TestHeaderReportsEveryProblem(t *testing.T) {
	h := &header.Filter{Add: map[string]string{"X A": "b", "X-B": ""}, Remove: []string{"a:b"}}
	err := h.Provision(filter.Env{})
	if err == nil {
		t.Fatal("Provision accepted bad names and values")
	}
	for _, want := range []string{`"X A"`, "X-B: empty value", `"a:b"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}
