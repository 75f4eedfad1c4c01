package spool

import "os"

// spoolFile is a Buffer's file.
type spoolFile struct {
	f    *os.File
	sp   *Spool
	path string // still to remove on close, where unlinking an open file failed
}

// createNamed makes a file with a name and unlinks it at once. Windows
// cannot remove an open file; there the name goes when the file is closed.
func (s *Spool) createNamed() (*spoolFile, error) {
	f, err := os.CreateTemp(s.dir, "msg-")
	if err != nil {
		return nil, err
	}
	sf := &spoolFile{f: f, sp: s}
	if os.Remove(f.Name()) != nil {
		sf.path = f.Name()
	}
	s.files.Add(1)
	return sf, nil
}

func (f *spoolFile) close() error {
	err := f.f.Close()
	if f.path != "" {
		os.Remove(f.path)
	}
	f.sp.files.Add(-1)
	return err
}
