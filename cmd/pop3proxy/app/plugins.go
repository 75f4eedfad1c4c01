package app

// The built-in filter plugins register themselves with package filter when
// imported. A custom build adds its own plugins the same way (see
// examples/filterplugin).
import (
	_ "github.com/pop3proxy/pop3proxy/filter/exec"
	_ "github.com/pop3proxy/pop3proxy/filter/header"
	_ "github.com/pop3proxy/pop3proxy/scanners/clamav"
	_ "github.com/pop3proxy/pop3proxy/scanners/rspamd"
	_ "github.com/pop3proxy/pop3proxy/scanners/spamassassin"
)
