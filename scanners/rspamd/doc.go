// Package rspamd is the "rspamd" filter plugin: it asks rspamd for a
// verdict on each message (POST /checkv2) and tags spam with the header
// fields the spamassassin plugin writes (X-Spam-Flag, X-Spam-Status,
// X-Spam-Level) and an optional Subject prefix. Spam is never dropped. See
// Filter for the configuration keys and docs/scanners.md, "rspamd", for
// what rspamd 3.4 does on the wire.
//
// An rspamd that gives no verdict (unreachable, timed out, a status other
// than 200, a reply that is not the JSON the plugin expects, or one
// without an action) is an error, never a clean verdict; the chain applies
// on_error. So is the action "soft reject": rspamd asks to try again later.
// Messages over max_size are deliberately not sent, as spamc does for
// spamd.
//
// # Spam is what rspamd's action says
//
// rspamd reports a score, required_score and an action. required_score is
// the threshold of the reject action, not of spam: with Debian's
// thresholds (actions.conf) a message scoring 6 gets "add header", which
// marks spam, but stays below required_score 15. The plugin therefore
// decides on the action, never on the score:
//
//	action           X-Spam-Flag  why
//	no action        -            ham
//	greylist         -            a delivery delay for a suspicious but
//	                              unproven sender, which a message already in
//	                              the mailbox has passed; below add header
//	add header       YES          rspamd's "mark as spam"
//	rewrite subject  YES          spam; subject_prefix, not rspamd's new
//	                              Subject, is what the proxy applies
//	reject           YES          spam (GTUBE gets this)
//	discard          YES          spam that rspamd would drop silently
//	quarantine       YES          spam that rspamd would hold back
//	soft reject      error        "try again later" (ratelimit, greylisting
//	                              with Redis, a timeout with
//	                              soft_reject_on_timeout): not a verdict
//	anything else    error        not understood
//
// # No SMTP envelope
//
// rspamd is built to run in an MTA, which tells it the client's address
// and host name, the HELO, the envelope sender and recipients and the
// SMTP AUTH user. A POP3 proxy saw none of these; it has only the message.
// The plugin sends what the message itself records and invents nothing:
//
//   - From (rspamd: the SMTP MAIL FROM): the address of the Return-Path
//     field, in which the delivering MTA recorded the envelope sender (RFC
//     5321 §4.4), "<>" for a bounce; without one, the From: field's first
//     address. SPF is checked for this address's domain.
//   - Rcpt (the SMTP RCPT TO, one header per address): the addresses of the
//     To: and Cc: fields, at most 100.
//   - Deliver-To (the actual recipient, for per-user statistics and
//     settings): filter.Meta.User, the mailbox's user.
//
// The mailbox user is deliberately not sent as User, which rspamd takes
// for the SMTP AUTH login of the sender: for such a message rspamd 3.4
// skips SPF, DKIM and DMARC checks, most RBLs and several other modules,
// as it does for mail its own users submit (docs/scanners.md, rspamd
// requests).
//
// No IP, Hostname or Helo is sent. rspamd then takes the client's address
// and host name from the topmost Received field, which on a mailbox is
// the delivering MTA's record of the sending host. When that field names
// the host "unknown" (no reverse DNS), rspamd adds HFILTER_HOSTNAME_UNKNOWN
// (2.5 points) and RDNS_NONE (1.0), as for such a client at SMTP time;
// without any Received field, HFILTER_HOSTNAME_UNKNOWN alone. An invented
// Hostname would hide that signal. When the topmost Received names a
// private address (a filter hop inside the receiving site), rspamd takes
// the message for local and skips SPF, DKIM and DMARC (docs/scanners.md,
// rspamd without an envelope).
//
// # Why net/http
//
// rspamd speaks plain HTTP/1.1 with a JSON reply: one request, which the
// standard library's client makes completely, so a third-party client
// would be a dependency for nothing. The plugin's own Transport gives
// dial, TLS and response-header timeouts, the context's deadline on the
// whole exchange, no proxy from the environment, an exact Content-Length
// for a message streamed from filter.Message.Open, a bounded reply, and
// connection reuse where the server allows it (rspamd 3.4 closes every
// connection after its reply; a reverse proxy in front may not).
package rspamd
