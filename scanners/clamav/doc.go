// Package clamav is the "clamav" filter plugin: it scans each message with
// ClamAV's clamd (INSTREAM, over a unix socket or TCP) and replaces,
// rejects or tags a message with a virus. See Filter for the configuration
// keys.
//
// A clamd that gives no answer (unreachable, timed out, a reply the plugin
// does not understand) is an error, never a clean verdict; the chain
// applies on_error. A message over max_stream, or one clamd refuses as
// over its StreamMaxLength, is an error wrapping filter.ErrTooLarge, for
// which the chain applies its oversize policy instead: retrying cannot
// make it smaller. A virus that cannot be quarantined fails closed
// (filter.ErrFailClosed).
//
// Messages are streamed from filter.Message.Open to clamd, to the
// quarantine and, for the notice, only their header: none is held in
// memory whole.
//
// # Why the clamd client is our own
//
// Each Go client on offer lacks something a mail proxy needs.
// github.com/dutchcoders/go-clamd (and copies such as lyimmi/go-clamd) has
// no context or deadlines, ignores errors writing a chunk's length, returns
// the write error instead of the reply when clamd answers early, reports a
// missing reply as a closed channel easily taken for "no virus", and
// carries the EICAR string. github.com/baruwa-enterprise/clamd (MPL-2.0)
// takes no context, scans only files named by path, skips the reply after
// a failed write and returns nothing for an empty reply.
// github.com/rainforestpay/clamdstream dials TCP only, without a deadline,
// and calls every reply without "FOUND" clean. The protocol is small
// (docs/scanners.md, Commands and framing); our own client guarantees
// exact framing, the context on every dial, read and write, a bounded
// reply read even after a failed write, and nothing but "stream: OK"
// taken as clean.
package clamav
