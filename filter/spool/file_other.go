//go:build !linux

package spool

func (s *Spool) createFile() (*spoolFile, error) { return s.createNamed() }
