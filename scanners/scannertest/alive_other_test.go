//go:build !unix

package scannertest_test

// alive cannot tell without Unix signals; the daemons these tests start
// do not run here anyway.
func alive(int) bool { return false }
