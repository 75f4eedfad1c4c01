// Command pop3proxy is a filtering POP3 proxy gateway. Mail clients log in
// as "remoteuser%remote.host:port"; the proxy logs in there with the same
// password, relays the maildrop and passes every retrieved message through
// the configured filter chain. See README.md for the configuration.
package main

import "github.com/pop3proxy/pop3proxy/cmd/pop3proxy/app"

func main() { app.Main() }
