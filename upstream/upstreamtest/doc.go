// Package upstreamtest runs real POP3 servers for tests: a Dovecot
// (Debian package dovecot-pop3d) in the foreground under a temporary
// directory, on free loopback ports, with its own passwd-file and Maildirs.
//
// Tests that need software from outside Go call testinfra.NeedBinary (StartDovecot does
// it itself). Without the program the test is skipped with a loud message, or
// fails when IntegrationRequired reports true (CI=true or
// POP3PROXY_INTEGRATION=require), so that CI never passes by skipping.
// ./test.sh installs everything when run as root.
//
// # What Dovecot serves (checked by running Dovecot 2.3.19.1, Debian 12)
//
// A message is stored in the Maildir exactly as given to Deliver, and
// Messages returns those stored bytes. On the wire Dovecot changes them:
//
//   - Every bare LF (one not preceded by CR) is sent as CRLF. CRLF pairs and
//     bare CRs (one not followed by LF) are sent unchanged, as are NUL and
//     8-bit bytes and a leading "From " line.
//   - A message that does not end in LF (no final newline, a final bare CR,
//     or an empty message) is followed by an added CRLF, so the terminating
//     "." is on a line of its own: "x" is sent as "x\r\n", "a\r" as
//     "a\r\r\n" and an empty message as "\r\n".
//   - The size in LIST, STAT and "+OK n octets" counts the message with bare
//     LFs converted (RFC 1939 §11), but not the CRLF added at the end: "x"
//     is listed as 1 octet and retrieved as 3.
//
// WireForm returns what a client receives for a stored message (after
// removing the dot-stuffing and the terminating ".CRLF" line) and ListSize
// the size Dovecot lists, so tests compare bytes exactly without copying
// these rules. Deliver names files without the ",S=" and ",W=" size fields,
// so Dovecot computes the sizes itself.
//
// UIDL answers 16 lower-case hex digits (pop3_uidl_format = %08Xu%08Xv:
// the UID, then UIDVALIDITY), stable across sessions. CAPA lists CAPA, TOP,
// UIDL, RESP-CODES, PIPELINING, AUTH-RESP-CODE, USER and "SASL PLAIN LOGIN",
// plus STLS with TLS. The greeting is "+OK Dovecot (Debian) ready." (no APOP
// timestamp).
//
// During a session Dovecot moves messages from new/ to cur/ and, at QUIT,
// marks retrieved ones seen (":2,S"); file names change, contents never do.
// Message numbers follow delivery order. DELE removes the file only on QUIT;
// a connection closed without QUIT keeps everything (WaitLog tells when
// Dovecot has finished with a dropped session).
//
// After a failed login Dovecot delays further logins from the same client
// address by a few seconds (its auth penalty). A test that fails a login on
// purpose should connect from an address of its own (127.0.0.2, ...: all of
// 127.0.0.0/8 is loopback on Linux).
//
// As root, the mail processes run as the system user "mail"; otherwise
// everything runs as the current user. Both are tested.
package upstreamtest
