// Package spamassassin is the "spamassassin" filter plugin: it asks
// SpamAssassin's spamd for a verdict on each message (the SYMBOLS command)
// and tags spam with X-Spam-* header fields and an optional Subject prefix.
// Spam is never dropped; the mail client's rules decide. See Filter for
// the configuration keys.
//
// spamd that cannot give an answer (unreachable, timed out, a reply the
// plugin does not understand) is an error, never a clean verdict; the
// chain then applies the filter's on_error policy. Messages over max_size
// are the exception: like spamc, the plugin deliberately does not send
// them (nearly all spam is small and checking time grows steeply with
// size) and marks them "X-Spam-Status: skipped".
//
// # Why the spamd client is our own
//
// The spamassassin filter speaks spamd's SPAMC/1.5 protocol with a small
// client of its own (spamd.go) instead of a library. The Go clients on
// offer each lack something a transparent proxy needs.
// github.com/teamwork/spamc, the rewrite of saintienn/go-spamc, frames
// requests correctly (Content-length, half-close) but dials TCP only, takes
// its I/O deadline from the dialer's timeout instead of the context, and
// reads replies without a size bound. github.com/baruwa-enterprise/spamd-client
// (MPL-2.0; jniltinho/spamd-client is a fork) has unix sockets and zlib
// but appends a CRLF to the message and announces the extra two bytes, so
// spamd does not judge the exact bytes the mail client receives, and its
// status-line pattern does not match spamd's error replies ("SPAMD/1.0 76
// Bad header line: ..."), losing their code and text. All of them also
// offer PROCESS and HEADERS, which rewrite the message and must not be used
// here (protocols.md item 22). The protocol is small (protocols.md §5), a
// dependency would cost a go.mod entry, and what matters here is easiest to
// guarantee and test in our own code: exact bytes, the context's deadline on
// every read and write, a bounded reply, and only SYMBOLS on the wire.
package spamassassin
