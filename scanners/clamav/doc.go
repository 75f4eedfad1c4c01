// Package clamav is the "clamav" filter plugin: it scans each message with
// ClamAV's clamd (the INSTREAM command, over a unix socket or TCP) and, when
// clamd finds a virus, replaces the message with a notice, rejects it, or
// tags it. See Filter for the configuration keys.
//
// clamd that cannot give an answer (unreachable, timed out, a reply the
// plugin does not understand, a message over max_stream) is an error,
// never a clean verdict; the chain then applies the filter's on_error
// policy. A virus found but not quarantined fails closed
// (filter.ErrFailClosed): it is never delivered.
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
package clamav
