//go:build linux

package chaos

import (
	"bytes"
	"fmt"
	"sort"
	"strings"
	"sync"
)

// Message is one message of a mailbox as the server holds it.
type Message struct {
	// Wire is the message as the server sends it to a client, without
	// the byte-stuffing: what a client reading it directly would get.
	Wire []byte
	// Infected says the chain must never deliver it as it is.
	Infected bool
}

// Expect says which deliveries of a message are correct.
type Expect struct {
	// Added are the header fields the chain adds in front of every
	// message it checks, exactly (e.g. "X-Scanned-By: pop3proxy\r\n").
	Added string
	// AddedPrefix lists field names whose lines may also precede the
	// message (X-Virus-Scanned, X-Spam-Status...); their values are not
	// checked, only that nothing else changed.
	AddedPrefix []string
	// Unscanned is the field that marks a message delivered without
	// being checked (too large, or a filter failed under on_error:
	// pass); with it in front, Added may be missing and an infected
	// message may be delivered: it is marked, not slipped through.
	Unscanned string
	// NoticeMarker is a string every virus notice contains and no
	// original does.
	NoticeMarker string
}

// Oracle tracks one run.
type Oracle struct {
	expect Expect

	mu        sync.Mutex
	boxes     map[string]map[string]Message // user → unique-id → message, before the run
	delivered map[key][][]byte              // complete deliveries, as received
	tops      map[key][][]byte              // complete answers to TOP n 0
	deleted   map[key]bool                  // DELE sent, then QUIT, in one session
	events    map[key][]string              // what happened, for the failure report
	faults    []string                      // faults injected during the run
}

// key names a message by its user and its unique-id (UIDL), which the
// server keeps for the message's life (RFC 1939 §7).
type key struct {
	user string
	uid  string
}

// New returns an Oracle for the mailboxes.
func New(expect Expect) *Oracle {
	return &Oracle{
		expect:    expect,
		boxes:     map[string]map[string]Message{},
		delivered: map[key][][]byte{},
		tops:      map[key][][]byte{},
		deleted:   map[key]bool{},
		events:    map[key][]string{},
	}
}

// Mailbox records what user's mailbox holds before the run, by unique-id.
func (o *Oracle) Mailbox(user string, msgs map[string]Message) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.boxes[user] = msgs
}

// Fault records a fault that was injected, for reports.
func (o *Oracle) Fault(what string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.faults = append(o.faults, what)
}

// Delivered records a message a client received completely (with its
// terminating line).
func (o *Oracle) Delivered(user, uid string, body []byte, note string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	k := key{user, uid}
	o.delivered[k] = append(o.delivered[k], bytes.Clone(body))
	o.events[k] = append(o.events[k], "delivered "+note)
}

// Headers records a complete answer to TOP n 0 for the message.
func (o *Oracle) Headers(user, uid string, header []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	k := key{user, uid}
	o.tops[k] = append(o.tops[k], bytes.Clone(header))
}

// Committed records that a session sent DELE for uids and then QUIT,
// whatever the answer to QUIT was: the server may have removed them.
func (o *Oracle) Committed(user string, uids []string, note string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, uid := range uids {
		k := key{user, uid}
		o.deleted[k] = true
		o.events[k] = append(o.events[k], "DELE+QUIT "+note)
	}
}

// Check compares the run with what the server holds now (after: user →
// unique-ids of the messages left) and returns every violation, each with
// what happened to the message and the faults of the run, and how many
// messages it checked.
func (o *Oracle) Check(after map[string]map[string]bool) (violations []string, checked int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	var v []string
	for _, user := range sortedKeys(o.boxes) {
		for _, uid := range sortedKeys(o.boxes[user]) {
			checked++
			m, k := o.boxes[user][uid], key{user, uid}
			if !after[user][uid] {
				switch {
				case !o.deleted[k]:
					v = append(v, o.report(k, "gone from the server without DELE and QUIT"))
				case len(o.delivered[k]) == 0:
					v = append(v, o.report(k, "deleted but never received completely"))
				}
			}
			for _, d := range o.delivered[k] {
				if why := o.wrong(m.Wire, m.Infected, d); why != "" {
					v = append(v, o.report(k, why))
				}
			}
			for _, h := range o.tops[k] {
				if why := o.wrong(headerOf(m.Wire), m.Infected, h); why != "" {
					v = append(v, o.report(k, "TOP n 0: "+why))
				}
			}
		}
	}
	for _, seen := range []map[key][][]byte{o.delivered, o.tops} {
		for k := range seen {
			if _, ok := o.boxes[k.user][k.uid]; !ok {
				v = append(v, o.report(k, "delivered a message that was never in the mailbox"))
			}
		}
	}
	return v, checked
}

// headerOf returns the header section of msg with the empty line that
// ends it: what TOP n 0 answers (RFC 1939 §7).
func headerOf(msg []byte) []byte {
	if i := bytes.Index(msg, []byte("\r\n\r\n")); i >= 0 {
		return msg[:i+4]
	}
	return msg
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// wrong says what is wrong with d, a delivery of orig (a whole message
// or its header), or "".
func (o *Oracle) wrong(orig []byte, infected bool, d []byte) string {
	if o.expect.NoticeMarker != "" && bytes.Contains(d, []byte(o.expect.NoticeMarker)) {
		if !infected {
			return "a clean message was replaced by a virus notice"
		}
		return ""
	}
	if !bytes.HasSuffix(d, orig) {
		return fmt.Sprintf("delivered %d bytes that are neither the original (%d bytes) with fields in front nor a notice", len(d), len(orig))
	}
	added := string(d[:len(d)-len(orig)])
	unscanned := o.expect.Unscanned != "" && hasField(added, o.expect.Unscanned)
	if infected && !unscanned {
		return "an infected message was delivered unmarked"
	}
	rest, found := strings.CutPrefix(added, o.expect.Added)
	if !found {
		rest, found = cutMiddle(added, o.expect.Added)
	}
	if !found && !unscanned {
		return fmt.Sprintf("the fields the chain adds are missing: %q", added)
	}
	allowed := append([]string{o.expect.Unscanned}, o.expect.AddedPrefix...)
	for _, line := range strings.SplitAfter(rest, "\r\n") {
		if line == "" || line[0] == ' ' || line[0] == '\t' {
			continue
		}
		name, _, _ := strings.Cut(line, ":")
		ok := false
		for _, p := range allowed {
			ok = ok || (p != "" && strings.EqualFold(name, p))
		}
		if !ok {
			return fmt.Sprintf("unexpected line before the message: %q", line)
		}
	}
	return ""
}

// cutMiddle removes the first whole-line occurrence of sub from s.
func cutMiddle(s, sub string) (string, bool) {
	if sub == "" {
		return s, true
	}
	i := strings.Index("\n"+s, "\n"+sub)
	if i < 0 {
		return s, false
	}
	return s[:i] + s[i+len(sub):], true
}

// hasField says whether the header lines in s include a field name.
func hasField(s, name string) bool {
	for _, line := range strings.SplitAfter(s, "\r\n") {
		if n, _, ok := strings.Cut(line, ":"); ok && strings.EqualFold(n, name) {
			return true
		}
	}
	return false
}

func (o *Oracle) report(k key, why string) string {
	return fmt.Sprintf("%s/%s: %s (events: %s; faults: %s)", k.user, k.uid, why,
		strings.Join(o.events[k], ", "), strings.Join(o.faults, ", "))
}
