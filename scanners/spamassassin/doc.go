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
// # Why the spamd client is our own
//
// Each Go client on offer lacks something a transparent proxy needs.
// github.com/teamwork/spamc (the rewrite of saintienn/go-spamc) dials TCP
// only, takes its deadline from the dialer instead of the context, and
// reads replies without a size bound. github.com/baruwa-enterprise/spamd-client
// (MPL-2.0; forked as jniltinho/spamd-client) appends a CRLF to the
// message, so spamd does not judge the bytes the client receives, and
// loses the code and text of spamd's error replies. All offer PROCESS and
// HEADERS, which rewrite the message (docs/scanners.md, spamd replies).
// Our own small client guarantees exact bytes, the context's deadline on
// every read and write, a bounded reply, and only SYMBOLS on the wire.
package spamassassin
