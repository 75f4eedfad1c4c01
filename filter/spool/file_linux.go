package spool

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// createFile makes a file that has no name: O_TMPFILE (Linux 3.11) means
// there is never anything to clean up, even after a crash. File systems
// without it get a named file, unlinked at once.
func (s *Spool) createFile() (*spoolFile, error) {
	fd, err := unix.Open(s.dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err == nil {
		s.files.Add(1)
		return &spoolFile{f: os.NewFile(uintptr(fd), s.dir+"/(unnamed)"), sp: s}, nil
	}
	if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EINVAL) {
		return nil, &os.PathError{Op: "open O_TMPFILE", Path: s.dir, Err: err}
	}
	return s.createNamed()
}
