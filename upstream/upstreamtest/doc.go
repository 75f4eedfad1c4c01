// Package upstreamtest runs a real POP3 server for tests: Dovecot (Debian
// package dovecot-pop3d) in the foreground under a temporary directory, on
// free loopback ports, with its own passwd-file and Maildirs. As root the
// mail processes run as the system user "mail", otherwise everything runs
// as the current user; both are tested.
//
// StartDovecot calls testinfra.NeedBinary: without dovecot the test is
// skipped with a loud message, or fails when testinfra.IntegrationRequired
// reports true (CI=true or POP3PROXY_INTEGRATION=require), so that CI never
// passes by skipping. ./test.sh installs everything when run as root.
//
// # What Dovecot serves (checked with Dovecot 2.3.19.1, Debian 12)
//
// Deliver stores a message exactly as given, and Messages returns the
// stored bytes. On the wire Dovecot changes them:
//
//   - Every bare LF (one not preceded by CR) is sent as CRLF. CRLF, bare CR,
//     NUL, 8-bit bytes and a leading "From " line are sent unchanged.
//   - A message that does not end in LF (including an empty one) is followed
//     by an added CRLF, so that the terminating "." is on a line of its own:
//     "x" is sent as "x\r\n", "a\r" as "a\r\r\n" and "" as "\r\n".
//   - LIST, STAT and "+OK n octets" count bare LFs as CRLF (RFC 1939 §11)
//     but not the added CRLF: "x" is listed as 1 octet and sent as 3.
//
// WireForm and ListSize compute both, so tests compare bytes exactly without
// copying these rules. Deliver leaves the ",S=" and ",W=" size fields out of
// file names, so Dovecot computes the sizes itself.
//
// UIDL answers 16 lower-case hex digits (pop3_uidl_format = %08Xu%08Xv: the
// UID, then UIDVALIDITY), stable across sessions. CAPA lists CAPA, TOP,
// UIDL, RESP-CODES, PIPELINING, AUTH-RESP-CODE, USER and "SASL PLAIN LOGIN",
// plus STLS with TLS. The greeting is "+OK Dovecot (Debian) ready.", without
// an APOP timestamp.
//
// Message numbers follow delivery order. During a session Dovecot moves
// messages from new/ to cur/ and, at QUIT, marks retrieved ones seen
// (":2,S"); file names change, contents never do. DELE removes the file only
// at QUIT; a connection closed without QUIT keeps everything (WaitLog tells
// when Dovecot has finished with a dropped session).
//
// With DovecotOptions.OAuth2, CAPA lists "SASL PLAIN LOGIN XOAUTH2
// OAUTHBEARER" and the oauth2 passdb checks each token with a
// TokenServer: valid only for the user the introspection names (a user
// name with "%" is refused at once, without asking). A refused token gets
// an error challenge (RFC 7628 §3.2.2; {"status":"invalid_token"} for
// OAUTHBEARER), then "-ERR [AUTH] Authentication failed." after the answer.
//
// After a failed login Dovecot delays further logins from the same address
// by a few seconds (its auth penalty). A test that fails a login on purpose
// connects from an address of its own, such as 127.0.0.2 (all of 127.0.0.0/8
// is loopback on Linux).
package upstreamtest
