package main

import (
	"errors"
	"os"

	"golang.org/x/sys/windows"
)

// errLocked is lockFile's error for a file another open file has locked.
var errLocked = errors.New("locked by another session")

// lockFile takes an exclusive lock on f's first byte without waiting. Like
// flock on Unix, a LockFileEx lock belongs to the file handle, so two
// sessions of one process exclude each other too; closing the handle
// releases it.
func lockFile(f *os.File) error {
	err := windows.LockFileEx(windows.Handle(f.Fd()), windows.LOCKFILE_EXCLUSIVE_LOCK|windows.LOCKFILE_FAIL_IMMEDIATELY,
		0, 1, 0, new(windows.Overlapped))
	if errors.Is(err, windows.ERROR_LOCK_VIOLATION) {
		return errLocked
	}
	return err
}
