// Command filterplugin is pop3proxy with one more filter plugin compiled
// in: the blocksender example. Adding a plugin takes its own package and
// one import line; the rest is the stock program (package app). See
// README.md.
package main

import (
	"github.com/pop3proxy/pop3proxy/cmd/pop3proxy/app"
	_ "github.com/pop3proxy/pop3proxy/examples/filterplugin/blocksender"
)

func main() { app.Main() }
