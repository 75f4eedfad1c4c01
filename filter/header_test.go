package filter

import (
	"errors"
	"strings"
	"testing"
)

func TestApplyEdits(t *testing.T) {
	for _, tc := range []struct {
		name, msg string
		edits     []Edit
		want      string
		unparsed  bool
	}{
		{
			name:  "add keeps everything else",
			msg:   "Subject: a\r\n\r\nbody\r\n",
			edits: []Edit{Add("X-One", "1"), Add("X-Two", "2")},
			want:  "X-One: 1\r\nX-Two: 2\r\nSubject: a\r\n\r\nbody\r\n",
		},
		{
			name:  "remove every instance, any case",
			msg:   "X-Spam-Flag: YES\r\nSubject: a\r\nx-spam-flag: no\r\n\r\nb\r\n",
			edits: []Edit{Remove("X-Spam-Flag")},
			want:  "Subject: a\r\n\r\nb\r\n",
		},
		{
			name:  "prefix keeps folding and position",
			msg:   "From: x\r\nSubject:  =?UTF-8?B?w6Q=?=\r\n =?UTF-8?B?w7Y=?=\r\nTo: y\r\n\r\nb\r\n",
			edits: []Edit{SubjectPrefix("[SPAM] ")},
			want:  "From: x\r\nSubject: [SPAM] =?UTF-8?B?w6Q=?=\r\n =?UTF-8?B?w7Y=?=\r\nTo: y\r\n\r\nb\r\n",
		},
		{
			name:  "prefix once only",
			msg:   "Subject: [SPAM] hi\r\n\r\nb\r\n",
			edits: []Edit{SubjectPrefix("[SPAM] ")},
			want:  "Subject: [SPAM] hi\r\n\r\nb\r\n",
		},
		{
			name:  "prefix adds a missing subject",
			msg:   "From: x\r\n\r\nb\r\n",
			edits: []Edit{SubjectPrefix("[SPAM] ")},
			want:  "Subject: [SPAM]\r\nFrom: x\r\n\r\nb\r\n",
		},
		{
			name:  "header only, no blank line",
			msg:   "Subject: a\r\nX-Old: 1\r\n",
			edits: []Edit{Remove("X-Old"), Add("X-New", "2")},
			want:  "X-New: 2\r\nSubject: a\r\n",
		},
		{
			name:     "unparsable header: adds only, rest unchanged",
			msg:      "From MAILER-DAEMON Sun Jan  1 00:00:00 2026\r\nSubject: a\r\n\r\nb\r\n",
			edits:    []Edit{Remove("Subject"), Add("X-New", "2")},
			want:     "X-New: 2\r\nFrom MAILER-DAEMON Sun Jan  1 00:00:00 2026\r\nSubject: a\r\n\r\nb\r\n",
			unparsed: true,
		},
		{
			name:     "bare LF header is not rewritten",
			msg:      "Subject: a\nX-Old: 1\n\nb\n",
			edits:    []Edit{Remove("X-Old")},
			want:     "Subject: a\nX-Old: 1\n\nb\n",
			unparsed: true,
		},
		{
			name:  "body bytes after edits are exact",
			msg:   "Subject: a\r\n\r\n\r\n.\r\n..x\r\n\x00\xff\r",
			edits: []Edit{Remove("Subject")},
			want:  "\r\n\r\n.\r\n..x\r\n\x00\xff\r",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := applyEdits([]byte(tc.msg), tc.edits)
			if tc.unparsed != errors.Is(err, errHeaderUnparsable) || (!tc.unparsed && err != nil) {
				t.Fatalf("err = %v, want unparsable=%v", err, tc.unparsed)
			}
			if string(got) != tc.want {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestAddedFieldsAreFolded(t *testing.T) {
	tests := strings.Repeat("SOME_LONG_RULE_NAME,", 12) + "LAST"
	got, err := applyEdits([]byte("S: a\r\n\r\n"), []Edit{Add("X-Spam-Status", "Yes, score=12.5 required=5.0 tests="+tests+" autolearn=no")})
	if err != nil {
		t.Fatal(err)
	}
	hdr, _, _ := strings.Cut(string(got), "\r\nS: a")
	for _, line := range strings.Split(hdr, "\r\n") {
		if len(line) > maxLine {
			t.Errorf("line of %d octets: %q", len(line), line)
		}
	}
	unfolded := strings.NewReplacer("\r\n\t", "").Replace(hdr)
	if !strings.Contains(unfolded, tests) {
		t.Errorf("folding lost text:\n%s", hdr)
	}
}

func TestEditsRefuseInjection(t *testing.T) {
	for _, e := range []Edit{Add("X-A", "v\r\nBcc: victim@example.com"), Add("Bad:Name", "v"), Add("X-A", "nul\x00")} {
		if _, err := applyEdits([]byte("S: a\r\n\r\n"), []Edit{e}); err == nil {
			t.Errorf("edit %+v accepted", e)
		}
	}
}
