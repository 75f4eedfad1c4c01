// Package upstreamtest runs a real POP3 server for tests: Dovecot (Debian
// package dovecot-pop3d) in the foreground in a temporary directory, on free
// loopback ports, with its own passwd-file and Maildirs; its mail processes
// run as "mail" under root, otherwise as the current user (both are tested).
// Without dovecot, StartDovecot skips the test loudly, or fails it if
// testinfra.IntegrationRequired, so that CI never passes by skipping;
// ./test.sh installs everything when run as root.
//
// # What Dovecot serves (checked with Dovecot 2.3.19.1, Debian 12)
//
// On the wire Dovecot sends every bare LF as CRLF (CRLF, bare CR, NUL, 8-bit
// bytes and a leading "From " line unchanged), and adds a CRLF to a message
// not ending in LF, so that the terminating "." is on a line of its own: "x"
// is sent as "x\r\n", "a\r" as "a\r\r\n", "" as "\r\n". LIST, STAT and "+OK
// n octets" count bare LFs as CRLF (RFC 1939 §11) but not the added CRLF:
// "x" is listed as 1 octet and sent as 3. WireForm and ListSize compute both,
// so tests compare bytes exactly without copying these rules. Deliver leaves
// the ",S=" and ",W=" size fields out of file names, so Dovecot computes the
// sizes itself.
//
// UIDL answers 16 lower-case hex digits (pop3_uidl_format = %08Xu%08Xv: the
// UID, then UIDVALIDITY), stable across sessions. CAPA lists CAPA, TOP,
// UIDL, RESP-CODES, PIPELINING, AUTH-RESP-CODE, USER and "SASL PLAIN LOGIN",
// plus STLS with TLS. The greeting "+OK Dovecot (Debian) ready." has no APOP
// timestamp. Message numbers follow delivery order. In a session Dovecot
// moves files from new/ to cur/ and, at QUIT, marks retrieved ones seen
// (":2,S"); names change, contents never do. DELE removes the file only at
// QUIT; a connection closed without QUIT keeps everything (see WaitLog).
//
// With DovecotOptions.OAuth2 a TokenServer checks tokens; docs/clients.md
// describes Dovecot's CAPA and its refusal (error challenge, RFC 7628 §3.2.2).
//
// After a failed login Dovecot delays logins from the same address by a few
// seconds (its auth penalty), so a test that fails a login on purpose
// connects from an address of its own, such as 127.0.0.2 (all of
// 127.0.0.0/8 is loopback on Linux).
package upstreamtest
