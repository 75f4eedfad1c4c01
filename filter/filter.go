// Package filter is the chain of filter plugins every retrieved message
// passes through before the client sees it.
//
// A plugin is a Go type registered by name (Register), built from its YAML
// block in the "filters:" list of the configuration, and run by a Chain. A
// Judge returns a Verdict; a Modifier returns a changed message. An error
// means the plugin failed (the scanner is down, timed out, answered
// garbage); it is never a verdict, and the Chain applies the filter's
// on_error policy (OnError).
//
// # Header edits
//
// Edits keep the bytes of every field they do not touch, and of the body,
// so that DKIM signatures over them stay valid (RFC 6376 §3.5). They must
// work on every header a mailbox can hold, or a sender's own "X-Spam-Flag:
// NO" would reach the client next to the proxy's verdict; so the header is
// read line by line, not with a parser that rejects an mbox "From " line,
// a line without a colon or bare LF line ends. A field is a line starting
// with a name (RFC 5322 §3.6.8), optional white space (RFC 5322 §4.5) and
// a colon, with its continuation lines (those starting with a space or a
// tab, RFC 5322 §2.2.3); any other line is kept as it is, in place. The
// header ends at the first empty line, or at the end of the message. On a
// header a strict parser accepts, this gives the same fields. Added fields
// go to the top, with CRLF line ends; a Subject prefix goes in place. An
// edit with CR, LF or NUL in it is the plugin's bug: the chain answers
// with a temporary failure.
package filter

import (
	"context"
	"errors"
	"fmt"
	"io"

	"go.uber.org/zap"
)

// Action is what a Verdict asks the chain to do with the message.
type Action int

const (
	Continue Action = iota // apply the Edits and run the next filter
	Accept                 // apply the Edits and deliver now, skipping the rest of the chain (an allow-list hit)
	Replace                // deliver Verdict.Replacement instead (a virus notice)
	Reject                 // answer the RETR with -ERR; the message stays on the server
)

func (a Action) String() string {
	switch a {
	case Continue:
		return "continue"
	case Accept:
		return "accept"
	case Replace:
		return "replace"
	case Reject:
		return "reject"
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// Verdict is a judge's decision about one message. A plugin that could
// not decide returns an error instead.
type Verdict struct {
	Action Action
	// Reason is short and safe to show in a header or to the client
	// ("virus Eicar-Test-Signature"); it is logged unless Action is Continue.
	Reason      string
	Edits       []Edit // header changes, in order, for Continue and Accept
	Replacement []byte // for Replace: the whole message delivered instead (CRLF line ends)
}

// EditOp is a kind of header edit.
type EditOp int

const (
	AddField      EditOp = iota // "Name: Value" at the top, where trace fields go (RFC 5322 §3.6.7)
	RemoveField                 // every field called Name (case-insensitive)
	PrefixSubject               // Value in front of the Subject, in place, or a new Subject
)

// Edit is one header change.
type Edit struct {
	Op    EditOp
	Name  string
	Value string
}

// Add returns an edit that adds a header field at the top.
func Add(name, value string) Edit { return Edit{Op: AddField, Name: name, Value: value} }

// Remove returns an edit that removes every field called name.
func Remove(name string) Edit { return Edit{Op: RemoveField, Name: name} }

// SubjectPrefix returns an edit that prefixes the Subject.
func SubjectPrefix(prefix string) Edit { return Edit{Op: PrefixSubject, Value: prefix} }

// Judge is a plugin that inspects a message and returns a Verdict. It must
// not keep or change the message. Judge may be called concurrently, for
// different messages and alongside other judges.
type Judge interface {
	Judge(ctx context.Context, m *Message) (Verdict, error)
}

// Modifier is a plugin that changes the message: it writes the new
// message (header, empty line, body; CRLF line ends) to out and returns
// true, or returns false for no change, whatever it wrote. out is spooled
// like the message itself, so it may be large; writes to it fail once the
// call is over, even for a plugin still running after its timeout. Modify
// may be called concurrently for different messages.
type Modifier interface {
	Modify(ctx context.Context, m *Message, out io.Writer) (bool, error)
}

// Env is what a plugin gets when it is provisioned.
type Env struct {
	Name   string // the filter's "name" key, or its type
	Logger *zap.Logger
}

// ErrFailClosed, wrapped into a plugin's error, makes the chain answer with
// a temporary failure whatever on_error says: the plugin knows the message
// is dangerous but could not finish handling it (a failed quarantine).
var ErrFailClosed = errors.New("filter: failure must not let the message pass")

// Provisioner is implemented by plugins that check their configuration
// once it is decoded. An error stops the proxy from starting.
type Provisioner interface {
	Provision(env Env) error
}
