package clamav

import "time"

// SetGenerationInterval shortens how long clamd's VERSION answer is
// reused, for a test; the returned function restores it.
func SetGenerationInterval(d time.Duration) func() {
	old := generationInterval
	generationInterval = d
	return func() { generationInterval = old }
}
