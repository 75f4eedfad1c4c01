// Package scanners holds the filter plugins that ship with the proxy. Each
// registers itself with package filter from an init function, so importing
// this package (the pop3proxy program does) makes these "type" values
// available in the "filters:" list of the configuration:
//
//   - clamav (ClamAV): scans each message with clamd and replaces it with
//     a notice, rejects it, or tags it when clamd finds a virus.
//   - spamassassin (SpamAssassin): asks spamd for a verdict and tags spam
//     with X-Spam-* fields and an optional Subject prefix.
//   - header (Header): removes, sets and adds fixed header fields.
//   - exec (Exec): pipes each message through an external program.
//
// Each type's documentation lists its configuration keys. A scanner that
// cannot give an answer (unreachable, timed out, a reply it does not
// understand, a message over clamav's max_stream) returns an error and
// never a clean verdict; the chain then applies the filter's on_error
// policy (protocols.md §4.6). The exception is spamassassin's max_size:
// like spamc, it deliberately does not send larger messages (spam is small,
// and checking large ones is slow), and marks them
// "X-Spam-Status: skipped" instead. A virus found but not quarantined fails
// closed (filter.ErrFailClosed): it is never delivered.
//
// # Why the clamd client is our own
//
// The clamav filter speaks clamd's INSTREAM protocol with a small client
// of its own (clamd.go). The Go clients on offer were weighed and each
// lacks something a mail proxy needs. github.com/dutchcoders/go-clamd, the
// best known (last changed years ago; lyimmi/go-clamd and others are
// copies of it), has no context or deadlines (a unix dial and every read
// and write can block for ever), ignores the error of writing a chunk's
// length, returns the write error without reading clamd's reply when clamd
// answers early (the mistake of python-clamd issue #24: the caller sees
// EPIPE instead of "INSTREAM size limit exceeded"), delivers replies on a
// channel that simply closes when clamd hangs up without answering, which
// a caller easily takes for "no virus", and carries the EICAR string in
// its source. github.com/baruwa-enterprise/clamd (MPL-2.0) sets a
// connection deadline but takes no context, scans only files named by
// path, returns on a write error without reading the reply, and returns no
// result and no error for an empty reply. github.com/rainforestpay/clamdstream
// dials TCP only without a deadline, and reports every reply without
// "FOUND" in it as clean: an ERROR, an empty reply, even a failed write of
// chunk data (it returns a nil error there). The protocol is small
// (protocols.md §4.2: a command, length-prefixed chunks, one terminated
// reply), and what matters here is easiest to guarantee and test in our
// own code: exact framing, the context on the dial and every read and
// write, a bounded reply, the reply read even after a failed write, and
// every answer other than exactly "stream: OK" treated as a failure.
//
// The spamassassin filter's client is its own for similar reasons, given
// at the top of spamassassin.go.
package scanners
