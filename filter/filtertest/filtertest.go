// Package filtertest builds filter chains for tests, from a "filters:"
// YAML list as the proxy does, logging to the test's log.
package filtertest

import (
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/pop3proxy/pop3proxy/filter"
)

// Chain builds a chain from doc, a YAML list of filter blocks, and closes
// it when the test ends. The error is Build's.
func Chain(t testing.TB, doc string) (*filter.Chain, error) {
	t.Helper()
	ch, err := filter.BuildYAML([]byte(doc), zaptest.NewLogger(t))
	if err == nil {
		t.Cleanup(func() { ch.Close() })
	}
	return ch, err
}

// MustChain is Chain for a configuration that must build.
func MustChain(t testing.TB, doc string) *filter.Chain {
	t.Helper()
	ch, err := Chain(t, doc)
	if err != nil {
		t.Fatalf("building the filter chain: %v", err)
	}
	return ch
}
