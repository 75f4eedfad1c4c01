// Package filter is the chain of filter plugins every retrieved message
// passes through before the client sees it: virus and spam scanners, header
// rewriters, external programs, your own plugins.
//
// A plugin is a Go type registered by name from an init function
// (Register), built from its YAML block in the "filters:" list of the
// configuration, and run by a Chain. It implements one of two interfaces:
//
//   - Judge only looks at the message and returns a Verdict: continue
//     (possibly with header edits), accept, replace or reject. Adjacent
//     judges run concurrently; their verdicts are applied in configuration
//     order.
//   - Modifier returns a changed message (the exec plugin). Modifiers run
//     one at a time, in configuration order, on the message as the filters
//     before them left it.
//
// A returned error means the plugin failed (the scanner is down, timed out,
// answered garbage); it is never a verdict. The Chain, not the plugin,
// applies the filter's on_error policy: pass (deliver unscanned, marked in
// a header), tempfail (the client gets -ERR [SYS/TEMP] and retries at its
// next poll; the default) or reject. Every filter runs under its timeout; a
// plugin that ignores its context is abandoned when the timeout passes.
package filter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"go.uber.org/zap"
)

// Message is one retrieved message, whole: header, blank line and body,
// exactly as the upstream holds it (CRLF line endings, no dot-stuffing).
// Plugins must not modify the bytes.
type Message struct {
	data []byte
	// Meta says where the message comes from.
	Meta Meta
}

// Meta describes a message's origin, for logs, headers and plugins that
// decide per user.
type Meta struct {
	// User is the user name at the upstream server.
	User string
	// Upstream is the upstream server's host:port.
	Upstream string
	// Number is the message number in the session.
	Number int
}

// NewMessage wraps raw message bytes. The Message keeps data; the caller
// must not change it afterwards.
func NewMessage(data []byte, meta Meta) *Message { return &Message{data: data, Meta: meta} }

// Bytes returns the message. The slice must not be modified.
func (m *Message) Bytes() []byte { return m.data }

// Len returns the message size in octets.
func (m *Message) Len() int { return len(m.data) }

// Reader returns a reader over the message.
func (m *Message) Reader() io.Reader { return bytes.NewReader(m.data) }

// Action is what a Verdict asks the chain to do with the message.
type Action int

const (
	// Continue: nothing against the message; apply the verdict's Edits and
	// run the next filter.
	Continue Action = iota
	// Accept: apply the Edits and deliver now, skipping the rest of the
	// chain (an allow-list hit).
	Accept
	// Replace: deliver Verdict.Replacement instead of the message (a virus
	// notice); the chain stops.
	Replace
	// Reject: answer the client's RETR with -ERR; the message stays on the
	// server and the chain stops.
	Reject
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

// Verdict is a judge's decision about one message. It is data: a plugin
// that could not decide returns an error instead.
type Verdict struct {
	Action Action
	// Reason is short and safe to show in a header or to the client
	// ("virus Eicar-Test-Signature", "spam score 1000.0"); it is logged with
	// every verdict other than Continue.
	Reason string
	// Edits change the header, for Continue and Accept. They are applied in
	// order; field order and bytes of untouched fields are kept.
	Edits []Edit
	// Replacement is the whole message (header, blank line, body, CRLF line
	// endings) delivered instead of the original, for Replace.
	Replacement []byte
}

// EditOp is a kind of header edit.
type EditOp int

const (
	// AddField adds "Name: Value" at the top of the header, where trace
	// and status fields go.
	AddField EditOp = iota
	// RemoveField removes every field called Name (case-insensitive).
	RemoveField
	// PrefixSubject puts Value in front of the Subject, in place, or adds
	// a Subject if there is none.
	PrefixSubject
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
// not keep or change the message. Judge may be called concurrently for
// different messages, and concurrently with other judges.
type Judge interface {
	Judge(ctx context.Context, m *Message) (Verdict, error)
}

// Modifier is a plugin that changes the message: it returns the new
// message bytes (header, blank line, body, CRLF), or nil for no change.
// Modify may be called concurrently for different messages.
type Modifier interface {
	Modify(ctx context.Context, m *Message) ([]byte, error)
}

// Env is what a plugin gets when it is provisioned.
type Env struct {
	// Name is the filter's name in the configuration (its "name" key, or
	// its type), for logs and headers.
	Name string
	// Logger is named after the filter.
	Logger *zap.Logger
}

// ErrFailClosed marks a plugin error after which the message must not be
// delivered, whatever the filter's on_error says: the plugin knows the
// message is dangerous but could not finish handling it (clamav found a
// virus but could not quarantine the original). Wrap it into the error;
// the chain answers with a temporary failure, so the message stays on the
// server until the problem is fixed.
var ErrFailClosed = errors.New("filter: failure must not let the message pass")

// Provisioner is implemented by plugins that check their configuration or
// prepare resources once, after their YAML block has been decoded. An
// error stops the proxy from starting, reported with the filter's place in
// the configuration.
type Provisioner interface {
	Provision(env Env) error
}
