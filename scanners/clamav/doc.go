// Package clamav is the "clamav" filter plugin: it scans each message with
// ClamAV's clamd (INSTREAM, over a unix socket or TCP) and replaces,
// rejects or tags a message with a virus. See Filter for the configuration
// keys.
//
// No answer from clamd (unreachable, timed out, a reply not understood) is
// an error, never clean: the chain applies on_error, or its oversize
// policy (ErrTooLarge). A virus that cannot be quarantined fails closed
// (filter.ErrFailClosed). No message is held in memory whole.
//
// The clamd client is our own: dutchcoders/go-clamd (and copies) has no
// deadlines, loses the reply when clamd answers early and takes a missing
// reply for "no virus"; baruwa-enterprise/clamd takes no context and scans
// only files; rainforestpay/clamdstream dials TCP only and calls every
// reply without "FOUND" clean. The protocol is small (docs/scanners.md,
// Commands and framing).
package clamav
