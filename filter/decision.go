package filter

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.yaml.in/yaml/v3"
)

// Decision is what a chain run decided about one message, in a form that
// Chain.Replay applies again to the same bytes without calling a plugin:
// a verdict cache stores it, never the message. Edits are kept as the
// batches the run applied (one per run of adjacent judges: each batch's
// added fields go on top of the previous ones, so they cannot be merged).
// A TempFail, or a run that met a failure, a timeout, a message too large
// for a scanner or a modifier that rewrote the message, records none: its
// result depends on more than the message.
type Decision struct {
	Outcome     Outcome  `json:"outcome"`
	Edits       [][]Edit `json:"edits,omitempty"`       // for Deliver without Replaced
	Replaced    bool     `json:"replaced,omitempty"`    // Replacement is delivered instead
	Replacement []byte   `json:"replacement,omitempty"` // a short notice
	Filter      string   `json:"filter,omitempty"`      // the filter that replaced or refused
	Reason      string   `json:"reason,omitempty"`      // its client-safe reason
}

// decisionVersion changes when Decision's encoding does; an entry of
// another version does not decode, and a cache counts it as a miss.
const decisionVersion = 1

type decisionWire struct {
	V int `json:"v"`
	Decision
}

// MarshalBinary encodes the Decision for a cache backend.
func (d *Decision) MarshalBinary() ([]byte, error) {
	return json.Marshal(decisionWire{V: decisionVersion, Decision: *d})
}

// UnmarshalBinary decodes what MarshalBinary made and checks it, so that a
// damaged or foreign entry is an error, never a wrong decision.
func (d *Decision) UnmarshalBinary(b []byte) error {
	var w decisionWire
	if err := json.Unmarshal(b, &w); err != nil {
		return fmt.Errorf("filter: decoding a decision: %w", err)
	}
	if w.V != decisionVersion {
		return fmt.Errorf("filter: decision encoding version %d, want %d", w.V, decisionVersion)
	}
	if err := w.Decision.check(); err != nil {
		return fmt.Errorf("filter: decoding a decision: %w", err)
	}
	*d = w.Decision
	return nil
}

// check refuses what no run records: a cached entry that fails it is
// treated as absent.
func (d *Decision) check() error {
	switch d.Outcome {
	case Deliver:
		if d.Replaced && len(d.Edits) > 0 {
			return errors.New("a replacement with header edits")
		}
		for _, batch := range d.Edits {
			if len(batch) == 0 {
				return errors.New("an empty batch of edits")
			}
			for _, e := range batch {
				if err := checkEdit(e); err != nil {
					return err
				}
			}
		}
	case Refuse:
		if d.Replaced || len(d.Edits) > 0 {
			return errors.New("a refusal with a message")
		}
	default:
		return fmt.Errorf("outcome %v is never recorded", d.Outcome)
	}
	return nil
}

// Replay applies d, recorded by Run for a message with m's bytes, and
// returns the Result Run gave, byte for byte. It reads and spools like
// Run; an edit that cannot be applied (a damaged entry) or a spool
// failure is a TempFail. The Result must be closed like Run's.
func (ch *Chain) Replay(ctx context.Context, m *Message, d *Decision) *Result {
	r := &Result{ch: ch}
	if err := d.check(); err != nil {
		ch.log.Error("cached decision cannot be replayed", append(m.Meta.LogFields(), zap.Error(err))...)
		return r.end(Result{Outcome: TempFail, Reason: tempfailReason})
	}
	switch {
	case d.Outcome == Refuse:
		return r.end(Result{Outcome: Refuse, Filter: d.Filter, Reason: d.Reason, Decision: d, Replayed: true})
	case d.Replaced:
		return r.end(Result{Outcome: Deliver, Message: NewMessage(d.Replacement, m.Meta), Changed: true,
			Filter: d.Filter, Reason: d.Reason, Decision: d, Replayed: true})
	}
	cur, changed := m, false
	for _, batch := range d.Edits {
		if err := ctx.Err(); err != nil {
			return r.end(Result{Outcome: TempFail, Reason: tempfailReason})
		}
		out, err := applyEdits(cur, batch, r.newHeaderBuffer)
		if err != nil {
			ch.log.Error("replaying header edits failed", append(m.Meta.LogFields(), zap.Error(err))...)
			return r.end(Result{Outcome: TempFail, Reason: tempfailReason})
		}
		cur, changed = out, true
	}
	return r.end(Result{Outcome: Deliver, Message: cur, Changed: changed, Decision: d, Replayed: true})
}

type recorder struct {
	batches  [][]Edit
	unusable bool // the run depended on more than the message
}

func (rc *recorder) batch(edits []Edit) {
	rc.batches = append(rc.batches, append([]Edit(nil), edits...))
}

func (rc *recorder) decision(res *Result) *Decision {
	if rc.unusable {
		return nil
	}
	switch {
	case res.Outcome == Refuse:
		return &Decision{Outcome: Refuse, Filter: res.Filter, Reason: res.Reason}
	case res.Outcome != Deliver:
		return nil
	case res.Filter != "": // a replacement
		b, err := res.Message.Bytes()
		if err != nil {
			return nil
		}
		return &Decision{Outcome: Deliver, Replaced: true, Replacement: b, Filter: res.Filter, Reason: res.Reason}
	}
	return &Decision{Outcome: Deliver, Edits: rc.batches}
}

// Fingerprint changes whenever a filter's YAML block (type, name, options,
// order) changes, and with the proxy's build, whose plugins may decide
// differently: a verdict cache keys its entries with it, so that a reload
// with other filters never replays the old chain's decisions.
func (ch *Chain) Fingerprint() string {
	if ch == nil {
		return ""
	}
	return ch.fingerprint
}

// FingerprintOf is the Fingerprint of the chain the filter blocks nodes
// build, so that configurations can be compared without building chains.
func FingerprintOf(nodes []yaml.Node) string {
	h := sha256.New()
	io.WriteString(h, "pop3proxy filter chain\x00")
	io.WriteString(h, buildID())
	for i := range nodes {
		// Marshalled, not as written: comments and layout do not count.
		b, err := yaml.Marshal(stripComments(&nodes[i]))
		if err != nil {
			b = []byte(fmt.Sprintf("unmarshallable block %d", i))
		}
		fmt.Fprintf(h, "\x00%d\x00", len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// stripComments copies a node without its comments, positions and style
// (flow or block, quoted or plain: its resolved tag says what a value is).
func stripComments(n *yaml.Node) *yaml.Node {
	c := *n
	c.HeadComment, c.LineComment, c.FootComment = "", "", ""
	c.Line, c.Column, c.Style = 0, 0, 0
	if len(n.Content) > 0 {
		c.Content = make([]*yaml.Node, len(n.Content))
		for i, k := range n.Content {
			c.Content[i] = stripComments(k)
		}
	}
	return &c
}

var buildID = sync.OnceValue(func() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown build"
	}
	id := bi.Main.Path + "@" + bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" || s.Key == "vcs.modified" {
			id += " " + s.Key + "=" + s.Value
		}
	}
	return id
})

// Generational is implemented by plugins whose verdicts change with data
// their daemon reports a version of (clamd's signature database).
// Generation returns a string that changes when the verdicts may. It is
// asked for every message a verdict cache looks up, so it must be cheap
// (query the daemon at most every few seconds) and bound its query by
// GenerationTimeout as well as ctx. Plugins without it (spamd and rspamd
// change rules without a version) are covered by the cache's TTL.
type Generational interface {
	Generation(ctx context.Context) (string, error)
}

// GenerationTimeout bounds a plugin's question to its daemon: a cache
// lookup that cannot be keyed is skipped and the message scanned.
const GenerationTimeout = 2 * time.Second

// Generation returns the generations of the chain's Generational plugins
// together, "" when it has none. An error (a daemon that does not say)
// means that no cached decision may be used or stored for now.
func (ch *Chain) Generation(ctx context.Context) (string, error) {
	if ch == nil {
		return "", nil
	}
	var parts []string
	for _, st := range ch.stages {
		g, ok := st.plugin.(Generational)
		if !ok {
			continue
		}
		v, err := g.Generation(ctx)
		if err != nil {
			return "", fmt.Errorf("filter %s: generation: %w", st.name, err)
		}
		parts = append(parts, st.name+"="+v)
	}
	return strings.Join(parts, "\x00"), nil
}

// HeaderSectionSize returns the length of m's header section as the edits
// see it (package documentation, Header edits). A TOP answer (RFC 1939 §7)
// has the same header section as the message, so its hash tells whether a
// decision recorded for the message applies to it.
func HeaderSectionSize(m *Message) (int64, error) {
	sc := newElementScanner(m.Open())
	defer sc.release()
	for {
		_, ok, err := sc.next()
		if err != nil {
			return 0, err
		}
		if !ok {
			return sc.pos, nil
		}
		if err := sc.finish(nil, 0); err != nil {
			return 0, err
		}
	}
}
