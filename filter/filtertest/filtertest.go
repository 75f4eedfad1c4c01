// Package filtertest builds filter chains for tests as the proxy does,
// logging to the test's log, and the messages plugins are tested with.
package filtertest

import (
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/pop3proxy/pop3proxy/filter"
)

// Chain builds a chain from doc, a YAML list of filter blocks, closed when the test ends.
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

// Run passes msg through ch under the test's context; the Result comes back
// closed, so read the returned bytes (nil unless delivered), not its Message.
// Call it from the test's goroutine: a failure to read the message ends the test.
func Run(t testing.TB, ch *filter.Chain, msg []byte, meta filter.Meta) (*filter.Result, []byte) {
	t.Helper()
	res := ch.Run(t.Context(), filter.NewMessage(msg, meta))
	defer res.Close()
	if res.Outcome != filter.Deliver {
		return res, nil
	}
	b, err := res.Message.Bytes()
	if err != nil {
		t.Fatalf("reading the delivered message: %v", err)
	}
	return res, b
}
