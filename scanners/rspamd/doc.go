// Package rspamd is the "rspamd" filter plugin: it asks rspamd for a
// verdict on each message (POST /checkv2) and tags spam with the
// spamassassin plugin's header fields (X-Spam-Flag, X-Spam-Status,
// X-Spam-Level) and an optional Subject prefix; spam is never dropped.
// Filter lists the configuration keys; docs/scanners.md, "rspamd", says
// what rspamd 3.4 does on the wire.
//
// No verdict (no reply, a status other than 200, a reply without the
// expected JSON or action, or "soft reject", rspamd's "try again later")
// is an error, never a clean verdict: the chain applies on_error. Messages
// over max_size are deliberately not sent, as spamc does for spamd.
//
// Spam is what rspamd's action says (isSpam), never the score:
// required_score is the reject threshold, and with Debian's actions.conf a
// message at 6 points gets "add header", spam, below required_score 15.
// "greylist" is ham: it delays an unproven sender, which a message already
// in the mailbox has passed. For "rewrite subject" the proxy applies
// subject_prefix, not rspamd's new Subject.
//
// rspamd expects an MTA to tell it the SMTP envelope; a POP3 proxy has only
// the message, so the plugin sends what the message records and invents
// nothing (docs/scanners.md, "rspamd without an envelope"): From (the MAIL
// FROM, whose domain SPF checks) from Return-Path (RFC 5321 §4.4; "<>" for
// a bounce) or else From:, Rcpt from To: and Cc: (at most 100), Deliver-To
// from filter.Meta.User. The mailbox user is deliberately not sent as User,
// the sender's SMTP AUTH login, for which rspamd 3.4 skips SPF, DKIM, DMARC,
// most RBLs and more. No IP, Hostname or Helo is sent: rspamd reads them
// from the topmost Received field, and an invented Hostname would hide
// HFILTER_HOSTNAME_UNKNOWN (2.5 points) and RDNS_NONE (1.0) for a sender
// without reverse DNS. A private address there (a filter hop inside the
// site) makes rspamd skip SPF, DKIM and DMARC.
//
// net/http suffices for one HTTP/1.1 request with a JSON reply; the pool
// serves a reverse proxy, as rspamd 3.4 closes each connection after use.
package rspamd
