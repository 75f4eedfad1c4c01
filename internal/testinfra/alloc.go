package testinfra

import "runtime"

// AllocatedDuring returns how many bytes the process allocated on the heap
// while f ran, freed or not, and how much the live heap grew: what a test
// needs to show that a message is streamed, not held in memory.
func AllocatedDuring(f func()) (allocated uint64, grown int64) {
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc, int64(after.HeapAlloc) - int64(before.HeapAlloc)
}
