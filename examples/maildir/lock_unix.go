//go:build unix

package main

import (
	"errors"
	"os"
	"syscall"
)

// errLocked is lockFile's error for a file another open file has locked.
var errLocked = errors.New("locked by another session")

// lockFile takes an exclusive flock on f without waiting. flock locks
// belong to the open file, so two sessions of one process exclude each
// other too; closing the file releases the lock.
func lockFile(f *os.File) error {
	err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return errLocked
	}
	return err
}
