// Package upstream is the proxy's side towards the real POP3 servers: it
// works out where a client login goes (ParseLogin, AllowList), connects
// there with the configured TLS policy (Dial, Overrides), and runs the
// commands the relay needs (Client).
//
// # Destinations
//
// AllowList says which "host:port" destinations a login may name at all.
// Overrides, with the same patterns, changes the TLS settings of Options
// for some of them (TLS mode, trust anchors, InsecureSkipVerify): the first
// matching Override is applied on top of the defaults.
//
// Options.DenyPrivate refuses destinations on loopback, link-local,
// private and other non-public addresses (PrivateAddr). Host names are
// resolved by the dialer, and the check runs in net.Dialer.ControlContext
// on each address the socket is about to connect to, before the connect:
// no byte reaches a refused address, and a name that resolves, or is
// rebound between two lookups, to a private address is refused like the
// address itself. The error wraps ErrDestinationDenied.
//
// Certificates are verified against Options.TLSConfig.RootCAs (nil: the
// system roots) and the server name passed to Dial, normally the host from
// the login (RFC 7817, RFC 8314). Options.InsecureSkipVerify keeps TLS
// but accepts any certificate, and logs a warning for every such
// connection.
//
// # go-pop3 plus a streaming reader of our own
//
// The agreed dependency github.com/knadh/go-pop3 v1.0.2 does the command
// plumbing: it reads the greeting and sends USER, PASS, STAT, LIST, UIDL,
// DELE, RSET, NOOP, QUIT, CAPA and STLS through Conn.Cmd. Its own RETR and
// TOP buffer the whole message in memory without a limit and rewrite bare LF
// to CRLF, so a Client never uses them. For RETR and TOP it writes the
// command with go-pop3's Conn.Send and then reads the status line and the
// dot-stuffed body itself, from a 64 KiB bufio.Reader on the same
// connection, through a dot-unstuffing reader that keeps every other byte as
// received and holds at most one buffer of the message (Message).
//
// Two readers on one connection work because POP3 without PIPELINING is lock
// step (RFC 1939 §3, RFC 2449 §6.6): the server sends exactly one response
// per command and nothing unsolicited, so whichever reader consumed a
// response to its end leaves the other one empty. The package does not trust
// the server to keep to that: the connection wrapper below go-pop3 follows
// the framing of every response it relays (the status line, and for
// multi-line responses the ".CRLF" terminator), and treats any byte that
// arrives after a complete response as a protocol violation. The streaming
// reader does the same check on its own buffer after the terminator.
//
// go-pop3 quirks neutralised here: it accepts an empty status line as +OK
// (the wrapper rejects every status line that is not "+OK" or "-ERR"
// followed by a space or the line end); it reports -ERR as a plain string
// (the wrapper keeps the status line, from which ServerError and its RFC
// 2449 response code are parsed); it formats arguments with %v and does no
// CR/LF check (Login refuses CR, LF and NUL before anything is written,
// protocols.md item 13); it leaks its connection when the greeting fails
// (Dial closes the connection itself); Conn.Auth sends a NOOP after PASS
// (Login sends USER and PASS only); it builds "host:port" with %s:%d, which
// breaks IPv6 literals (the connection is dialled before go-pop3 sees it, and
// its Opt.Dialer only hands that connection over).
//
// # Deadlines and limits
//
// go-pop3 has no deadlines at all. Every Read and Write on the connection
// goes through a wrapper that sets a deadline first: during Dial one fixed
// deadline (Options.DialTimeout, or the context's, whichever is earlier)
// covers the TCP connect, the TLS handshake, the greeting, CAPA and STLS;
// afterwards every single read and write may take at most Options.Timeout,
// so a stalled server fails the command instead of hanging the session, and
// each whole response at most Options.ResponseTimeout (default 30 minutes),
// so a server that trickles a byte now and then cannot hold a session
// forever either. The same wrapper counts the bytes of each buffered
// response (single lines, LIST, UIDL, CAPA) and fails past
// Options.MaxResponseBytes, so an endless line cannot exhaust memory.
//
// RETR and TOP are streamed and not capped in size: memory stays at one
// buffer whatever the size, and a body that never ends is cut off by
// ResponseTimeout. (A relay that filters messages buffers them only up to
// its own size limit and streams the rest, so it needs no cap here.) There
// is deliberately no size cap on messages: the upstream's maildrop decides
// what a message is, and a cap would make large mail impossible to fetch.
//
// # Errors
//
// Every transport or protocol failure wraps ErrConnection and leaves the
// Client broken (Broken reports true and the connection is closed): after a
// timeout or a framing error nobody knows where the next response starts,
// so the session cannot be resynchronised. A -ERR from the server is a
// *ServerError and leaves the connection usable.
//
// # No QUIT unless asked
//
// Deletions are committed only when QUIT is sent in the TRANSACTION state
// (RFC 1939 §6). A session that ends any other way (the client disappears, a
// timeout, a filter error) must leave the maildrop untouched, so the Client
// never sends QUIT on its own: Abort, Message.Close before the end and every
// error path close the TCP connection without a word. Only Quit sends QUIT.
package upstream
