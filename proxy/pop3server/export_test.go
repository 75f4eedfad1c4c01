package pop3server

// ConnCounts returns how many connections s tracks (accepted and not yet
// closed) and how many hold a slot of MaxConnections.
func ConnCounts(s *Server) (tracked, counted int) {
	s.mu.Lock()
	tracked = len(s.conns)
	s.mu.Unlock()
	s.limiter.mu.Lock()
	counted = s.limiter.total
	s.limiter.mu.Unlock()
	return tracked, counted
}
