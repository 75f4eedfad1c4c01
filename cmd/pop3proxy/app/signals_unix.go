//go:build !windows

package app

import (
	"os"
	"syscall"
)

// stopSignals drain the proxy; a second one ends the drain at once.
var stopSignals = []os.Signal{syscall.SIGTERM, syscall.SIGINT}

// reloadSignals re-read the configuration file. SIGHUP, whose default
// action ends the process, is also what a closed terminal sends: a
// proxy started from a shell survives it.
var reloadSignals = []os.Signal{syscall.SIGHUP}
