// Package spamtag writes the verdict fields the spam plugins share, so that
// a mail client's rules work the same behind spamassassin or rspamd:
// X-Spam-Flag, X-Spam-Level and X-Spam-Status, after SpamAssassin's own
// fields, and an optional Subject prefix.
package spamtag

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/pop3proxy/pop3proxy/filter"
)

const (
	FlagField   = "X-Spam-Flag"
	StatusField = "X-Spam-Status"
	LevelField  = "X-Spam-Level"

	maxSubjectPrefix = 64
	// maxStars caps X-Spam-Level, as SpamAssassin's _STARS_ tag does.
	maxStars = 50
)

// IsField reports whether name is one of the fields this package writes.
func IsField(name string) bool {
	return strings.EqualFold(name, FlagField) || strings.EqualFold(name, StatusField) || strings.EqualFold(name, LevelField)
}

// removeForged comes first in every verdict, so that a sender cannot forge
// one.
func removeForged() []filter.Edit {
	return []filter.Edit{filter.Remove(FlagField), filter.Remove(StatusField), filter.Remove(LevelField)}
}

// Skipped marks a message the plugin did not send because it is over
// maxSize; the filter's on_error does not apply to it.
func Skipped(maxSize int64) []filter.Edit {
	return append(removeForged(), filter.Add(StatusField, fmt.Sprintf("skipped (message larger than %d bytes)", maxSize)))
}

// Verdict marks a checked message in SpamAssassin's own order: Flag (spam
// only), Level (from 1 point), Status.
func Verdict(spam bool, score float64, status string) []filter.Edit {
	edits := removeForged()
	if spam {
		edits = append(edits, filter.Add(FlagField, "YES"))
	}
	if s := stars(score); s != "" {
		edits = append(edits, filter.Add(LevelField, s))
	}
	return append(edits, filter.Add(StatusField, status))
}

func stars(score float64) string {
	if score < 1 {
		return ""
	}
	return strings.Repeat("*", int(min(score, maxStars)))
}

// NormaliseSubjectPrefix checks a subject_prefix key and adds one space.
// It is spliced into the raw Subject, so a CR or LF would inject header
// lines; 8-bit text is refused: fields are ASCII (RFC 5322 §2.2) unless
// RFC 2047-encoded.
func NormaliseSubjectPrefix(p string) (string, error) {
	if p == "" {
		return "", nil
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c < 0x20 || c > 0x7e {
			return "", fmt.Errorf("subject_prefix %s: only printable ASCII is allowed (no CR, LF or other control characters; use an RFC 2047 encoded-word for other text)", strconv.Quote(p))
		}
	}
	// Leading spaces would defeat the chain's check that a Subject is not
	// tagged twice, which compares the text after the colon and its spaces.
	t := strings.TrimSpace(p)
	if t == "" {
		return "", errors.New("subject_prefix is only spaces; leave it empty to keep the Subject untouched")
	}
	if len(t) > maxSubjectPrefix {
		return "", fmt.Errorf("subject_prefix is %d characters long; at most %d are allowed", len(t), maxSubjectPrefix)
	}
	return t + " ", nil
}
