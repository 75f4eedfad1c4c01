// Package pop3server is a framework for writing POP3 servers (RFC 1939,
// with RFC 2449 CAPA, PIPELINING and response codes, RFC 3206 codes,
// RFC 2595 STLS and RFC 5034 AUTH), in the spirit of Perl's
// Net::Server::POP3. The project's relaying gateway is built on it.
//
// As in go-smtp and go-imap, the server owns the wire and the backend the
// maildrop: the server parses commands, checks their state and syntax and
// formats every response; a Backend authenticates the client and returns a
// Session, which answers for one maildrop with plain Go values. Optional
// features are add-on interfaces found by type assertion. A backend with
// only a list of messages implements Mailbox and uses NewMailboxSession.
//
// An *Error from a Backend or Session is sent as "-ERR [Code] Message"; any
// other error is logged and answered "-ERR [SYS/TEMP] internal error", so
// internal detail never reaches the client.
//
// The server guarantees:
//
//   - Deletions are committed only by QUIT in the TRANSACTION state
//     (RFC 1939 §6), never on a dropped connection, a timeout, a shutdown
//     or an internal error. Session.Close is called exactly once.
//   - Commands run strictly in order, and the responses to a pipelined
//     batch go out in one write (RFC 2449 §6.6). Clients pipeline even
//     where PIPELINING is not announced (docs/clients.md, Thunderbird).
//   - A message body that fails half-way leaves its response unterminated,
//     so the client never takes a truncated message for a complete one.
//   - A panic in a backend closes that connection only.
//   - Passwords, APOP digests, tokens and SASL data are never logged, nor
//     is any part of an unknown command line or SASL mechanism, which may
//     be a password (one pipelined behind a refused user name, say): only
//     its length, or the name of a known but unimplemented command. Hitting
//     a limit is logged at most once a minute per limit and client address.
//   - Bytes the client sends after STLS and before the handshake close the
//     connection (the CVE-2011-0411 plaintext injection).
//   - SASL PLAIN and LOGIN are terminated by the server and mapped onto
//     Backend.Login, so every backend gets AUTH. A bare AUTH lists the
//     mechanisms as Dovecot does (docs/clients.md, Outlook).
//   - OAuth 2.0 bearer tokens (SASL XOAUTH2 and OAUTHBEARER, RFC 7628) are
//     offered only to a TokenBackend. The server parses and checks both
//     formats and owns the wire of an error challenge; the backend only
//     decides.
//   - Server.Reconfigure changes the options, backend included, only for
//     connections accepted afterwards; Options.OnRelease says when the last
//     connection accepted with the old ones has ended.
package pop3server
