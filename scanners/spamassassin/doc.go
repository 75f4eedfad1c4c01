// Package spamassassin is the "spamassassin" filter plugin: it asks
// SpamAssassin's spamd for a verdict on each message (SYMBOLS) and tags
// spam with X-Spam-* header fields and an optional Subject prefix. Spam is
// never dropped. See Filter for the configuration keys.
//
// A spamd that gives no answer (unreachable, timed out, a reply the plugin
// does not understand) is an error, never a clean verdict; the chain
// applies on_error. Messages over max_size are deliberately not sent, as
// spamc does (docs/scanners.md, spamd sizes and rules).
//
// The spamd client is our own: teamwork/spamc (and saintienn/go-spamc)
// dials TCP only, ignores the context's deadline and reads replies
// unbounded; baruwa-enterprise/spamd-client appends a CRLF to the message,
// so spamd does not judge the bytes the client receives, and loses spamd's
// error replies; all offer PROCESS and HEADERS, which rewrite the message
// (docs/scanners.md, spamd replies).
package spamassassin
