package app

import (
	"os"
	"syscall"
)

// stopSignals drain the proxy: Ctrl-C or Ctrl-Break in a console, and
// SIGTERM, which Go delivers when the console is closed or the user logs
// off. A service is stopped through run's stop channel instead.
var stopSignals = []os.Signal{os.Interrupt, syscall.SIGTERM}

// reloadSignals is empty: Windows has no SIGHUP. A reload is asked for
// through run's reload channel.
var reloadSignals []os.Signal
