package spamtag

import (
	"strings"
	"testing"

	"github.com/pop3proxy/pop3proxy/filter"
)

func TestStars(t *testing.T) {
	for score, want := range map[float64]int{-5: 0, 0: 0, 0.99: 0, 1: 1, 5.9: 5, 49.9: 49, 50: 50, 1000: 50} {
		if got := stars(score); got != strings.Repeat("*", want) {
			t.Errorf("stars(%v) = %q, want %d stars", score, got, want)
		}
	}
}

// TestVerdictOrder: forged fields go first, then SpamAssassin's own order.
func TestVerdictOrder(t *testing.T) {
	names := func(edits []filter.Edit) (s []string) {
		for _, e := range edits {
			switch e.Op {
			case filter.RemoveField:
				s = append(s, "remove "+e.Name)
			case filter.AddField:
				s = append(s, "add "+e.Name+": "+e.Value)
			default:
				s = append(s, "other "+e.Name)
			}
		}
		return s
	}
	spam := strings.Join(names(Verdict(true, 7.5, "Yes, score=7.5")), "|")
	ham := strings.Join(names(Verdict(false, 0.5, "No, score=0.5")), "|")
	skipped := strings.Join(names(Skipped(100)), "|")
	for _, tc := range []struct{ got, want string }{
		{spam, "remove X-Spam-Flag|remove X-Spam-Status|remove X-Spam-Level|add X-Spam-Flag: YES|add X-Spam-Level: *******|add X-Spam-Status: Yes, score=7.5"},
		{ham, "remove X-Spam-Flag|remove X-Spam-Status|remove X-Spam-Level|add X-Spam-Status: No, score=0.5"},
		{skipped, "remove X-Spam-Flag|remove X-Spam-Status|remove X-Spam-Level|add X-Spam-Status: skipped (message larger than 100 bytes)"},
	} {
		if tc.got != tc.want {
			t.Errorf("got  %s\nwant %s", tc.got, tc.want)
		}
	}
}

func TestIsField(t *testing.T) {
	for name, want := range map[string]bool{"x-spam-flag": true, "X-SPAM-STATUS": true, "X-Spam-Level": true, "X-Spamd-Result": false, "X-Spam": false} {
		if IsField(name) != want {
			t.Errorf("IsField(%q) = %v", name, !want)
		}
	}
}
