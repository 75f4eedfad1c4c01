package filter

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-multierror"
	"go.uber.org/zap"
	"go.yaml.in/yaml/v3"

	"github.com/pop3proxy/pop3proxy/filter/spool"
	"github.com/pop3proxy/pop3proxy/yamlconf"
)

// OnError is a filter's policy for its own failures.
type OnError int

const (
	OnErrorTempfail OnError = iota // answer -ERR [SYS/TEMP]; the client retries later
	OnErrorPass                    // deliver the message marked with UnscannedField
	OnErrorReject                  // answer the RETR with -ERR
)

// DefaultTimeout bounds a filter whose configuration sets no timeout.
const DefaultTimeout = 30 * time.Second

// UnscannedField marks a message delivered although a filter failed.
const UnscannedField = "X-Pop3proxy-Unscanned"

type stage struct {
	name     string
	typ      string
	plugin   Plugin
	judge    Judge
	modifier Modifier
	timeout  time.Duration
	onError  OnError
	slots    chan struct{} // one per running call; nil for no limit
	inline   bool          // PluginInfo.Inline: called directly
	path     string        // in the configuration: "filters[1]"
	log      *zap.Logger
	obs      FilterObserver // nil: nobody is told
}

// Chain runs the configured filters over messages, safe for concurrent use.
type Chain struct {
	stages      []*stage
	log         *zap.Logger
	spool       *spool.Spool
	oversize    Oversize
	fingerprint string
}

// Oversize is what happens to a message too large to be checked: over
// max_size, or over what a scanner accepts (ErrTooLarge).
type Oversize int

const (
	OversizeTag    Oversize = iota // deliver it marked with UnscannedField
	OversizePass                   // deliver it unmarked
	OversizeReject                 // answer -ERR; the message stays on the server
)

// ParseOversize reads the oversize key: tag, pass or reject.
func ParseOversize(s string) (Oversize, error) {
	switch s {
	case "", "tag":
		return OversizeTag, nil
	case "pass":
		return OversizePass, nil
	case "reject":
		return OversizeReject, nil
	}
	return 0, fmt.Errorf("%q is not one of tag, pass, reject", s)
}

func (o Oversize) String() string { return [...]string{"tag", "pass", "reject"}[o] }

// ErrTooLarge, wrapped into a plugin's error, says that the message is
// larger than the scanner accepts: retrying cannot help, so the chain
// applies the oversize policy instead of on_error.
var ErrTooLarge = errors.New("filter: message too large for the scanner")

// SetSpool makes the chain spool rewritten headers and modifier output in sp.
func (ch *Chain) SetSpool(sp *spool.Spool) { ch.spool = sp }

// SetOversize sets the policy for messages a scanner finds too large.
func (ch *Chain) SetOversize(o Oversize) { ch.oversize = o }

// spec holds the keys every filter block has; the others are the plugin's.
type spec struct {
	Type          string            `yaml:"type"`
	Name          string            `yaml:"name"`
	Timeout       yamlconf.Duration `yaml:"timeout"`
	OnError       string            `yaml:"on_error"`
	MaxConcurrent *int              `yaml:"max_concurrent"`
}

// Build makes a Chain from the "filters:" list of the configuration.
// Every problem of every filter is reported at once, each under its path
// ("filters[1].address"); plugins already provisioned are then closed.
func Build(nodes []yaml.Node, log *zap.Logger) (*Chain, error) {
	if log == nil {
		log = zap.NewNop()
	}
	ch := &Chain{log: log, fingerprint: FingerprintOf(nodes)}
	var errs *multierror.Error
	names := map[string]bool{}
	for i := range nodes {
		st, ferrs := buildStage(&nodes[i], fmt.Sprintf("filters[%d]", i), names, log)
		for _, e := range ferrs {
			errs = multierror.Append(errs, e)
		}
		if st != nil {
			ch.stages = append(ch.stages, st)
		}
	}
	if err := errs.ErrorOrNil(); err != nil {
		ch.Close()
		return nil, err
	}
	return ch, nil
}

// BuildYAML is Build for a YAML document holding the value of "filters:".
func BuildYAML(doc []byte, log *zap.Logger) (*Chain, error) {
	var nodes []yaml.Node
	if err := yaml.Unmarshal(doc, &nodes); err != nil {
		return nil, fmt.Errorf("filters: not a YAML list of filter blocks: %s", yamlconf.CleanError(err))
	}
	return Build(nodes, log)
}

func buildStage(node *yaml.Node, path string, names map[string]bool, log *zap.Logger) (*stage, []error) {
	if node.Kind != yaml.MappingNode {
		return nil, []error{yamlconf.NewFieldError(path, node.Line, "expected a mapping with a type key")}
	}
	common := &yaml.Node{Kind: yaml.MappingNode}
	own := &yaml.Node{Kind: yaml.MappingNode, Line: node.Line}
	for i := 0; i+1 < len(node.Content); i += 2 {
		switch node.Content[i].Value {
		case "type", "name", "timeout", "on_error", "max_concurrent":
			common.Content = append(common.Content, node.Content[i], node.Content[i+1])
		default:
			own.Content = append(own.Content, node.Content[i], node.Content[i+1])
		}
	}
	var sp spec
	errs := yamlconf.DecodeStrict(common, &sp, path)
	if sp.Type == "" {
		return nil, append(errs, yamlconf.NewFieldError(path, node.Line, "missing type (one of: %s)", strings.Join(Types(), ", ")))
	}
	info, ok := lookup(sp.Type)
	if !ok {
		return nil, append(errs, yamlconf.NewFieldError(yamlconf.JoinPath(path, "type"), node.Line, "unknown filter type %q (one of: %s)", sp.Type, strings.Join(Types(), ", ")))
	}
	st := &stage{typ: sp.Type, name: sp.Name, timeout: sp.Timeout.D(), path: path}
	switch {
	case st.name == "":
		st.name = sp.Type
		for n := 2; names[st.name]; n++ {
			st.name = fmt.Sprintf("%s-%d", sp.Type, n)
		}
		if err := checkName(st.name); err != nil {
			errs = append(errs, yamlconf.NewFieldError(path, node.Line, "type %q cannot be the filter's name: %v; set name", sp.Type, err))
		}
	case names[st.name]:
		errs = append(errs, yamlconf.NewFieldError(yamlconf.JoinPath(path, "name"), node.Line, "name %q is used by another filter", st.name))
	default:
		if err := checkName(st.name); err != nil {
			errs = append(errs, yamlconf.NewFieldError(yamlconf.JoinPath(path, "name"), node.Line, "%v", err))
		}
	}
	names[st.name] = true
	if st.timeout == 0 {
		st.timeout = DefaultTimeout
	}
	switch sp.OnError {
	case "", "tempfail":
		st.onError = OnErrorTempfail
	case "pass":
		st.onError = OnErrorPass
	case "reject":
		st.onError = OnErrorReject
	default:
		errs = append(errs, yamlconf.NewFieldError(yamlconf.JoinPath(path, "on_error"), node.Line, "%q is not one of tempfail, pass, reject", sp.OnError))
	}

	st.inline = info.Inline
	limit := info.MaxConcurrent
	if sp.MaxConcurrent != nil {
		limit = *sp.MaxConcurrent
	}
	switch {
	case limit < 0:
		errs = append(errs, yamlconf.NewFieldError(yamlconf.JoinPath(path, "max_concurrent"), node.Line, "must not be negative (0 means no limit)"))
	case limit > 0:
		st.slots = make(chan struct{}, limit)
	}

	st.plugin = info.New()
	errs = append(errs, yamlconf.DecodeStrict(own, st.plugin, path)...)
	st.judge, _ = st.plugin.(Judge)
	st.modifier, _ = st.plugin.(Modifier)
	if st.judge == nil && st.modifier == nil {
		errs = append(errs, yamlconf.NewFieldError(path, node.Line, "plugin type %q implements neither filter.Judge nor filter.Modifier", sp.Type))
	}
	if len(errs) > 0 {
		return nil, errs
	}
	st.log = log.Named("filter." + sp.Type).With(zap.String("filter", st.name))
	if p, ok := st.plugin.(Provisioner); ok {
		if err := p.Provision(Env{Name: st.name, Logger: st.log}); err != nil {
			return nil, []error{yamlconf.NewFieldError(path, node.Line, "%s: %v", sp.Type, err)}
		}
	}
	return st, nil
}

// maxName bounds a filter's name, which goes into UnscannedField.
const maxName = 64

// checkName accepts the names a header field value and a log line can carry
// as they are: a CR or LF would make UnscannedField impossible to add.
func checkName(name string) error {
	ok := len(name) <= maxName
	for i := 0; ok && i < len(name); i++ {
		c := name[i]
		ok = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.'
	}
	if !ok {
		return fmt.Errorf("name %s: use 1 to %d ASCII letters, digits, '-', '_' or '.'", strconv.Quote(name), maxName)
	}
	return nil
}

// StreamLimiter: the plugin's scanner refuses messages over a size (clamav's max_stream).
type StreamLimiter interface {
	// MaxStream returns the largest message checked and the key that sets it.
	MaxStream() (limit int64, key string)
}

// CheckMaxSize reports every filter that cannot check a message of maxSize
// octets: such messages would fall under max_size and never be scanned.
func (ch *Chain) CheckMaxSize(maxSize int64) []error {
	var errs []error
	for _, st := range ch.stages {
		if l, ok := st.plugin.(StreamLimiter); ok {
			if limit, key := l.MaxStream(); limit < maxSize {
				errs = append(errs, yamlconf.NewFieldError(yamlconf.JoinPath(st.path, key), 0,
					"%d octets is less than max_size (%d octets): messages in between could never be scanned; raise %s (and the scanner's own limit) or lower max_size",
					limit, maxSize, key))
			}
		}
	}
	return errs
}

// Len returns the number of filters.
func (ch *Chain) Len() int {
	if ch == nil {
		return 0
	}
	return len(ch.stages)
}

// Names lists the filters in execution order.
func (ch *Chain) Names() []string {
	if ch == nil {
		return nil
	}
	names := make([]string, len(ch.stages))
	for i, st := range ch.stages {
		names[i] = st.name + " (" + st.typ + ")"
	}
	return names
}

// Close closes the plugins that implement io.Closer.
func (ch *Chain) Close() error {
	if ch == nil {
		return nil
	}
	var errs *multierror.Error
	for _, st := range ch.stages {
		if c, ok := st.plugin.(io.Closer); ok {
			if err := c.Close(); err != nil {
				errs = multierror.Append(errs, fmt.Errorf("filter %s: %w", st.name, err))
			}
		}
	}
	return errs.ErrorOrNil()
}

// Outcome is what the chain decided for a message.
type Outcome int

const (
	Deliver  Outcome = iota // send Result.Message to the client
	TempFail                // answer -ERR [SYS/TEMP]; the client retries later
	Refuse                  // answer -ERR; the message stays on the server
)

func (o Outcome) String() string {
	switch o {
	case Deliver:
		return "deliver"
	case TempFail:
		return "tempfail"
	case Refuse:
		return "refuse"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// Result is the chain's decision for one message.
type Result struct {
	Outcome Outcome
	Message *Message // for Deliver; the original if nothing changed
	Changed bool     // whether Message differs from the original
	Filter  string   // the filter that decided a TempFail, Refuse or replacement
	Reason  string   // short and client-safe
	// Decision is what Replay needs to give this Result again for the same
	// bytes, or nil when the run cannot be replayed (see Decision).
	Decision *Decision
	Replayed bool // the Result came from Replay, not from the plugins

	ch   *Chain
	bufs []*spool.Buffer // made by this run; Message may read them
	rec  *recorder       // Run's, until end
}

// Close releases what the run spooled. Message must not be read after it.
func (r *Result) Close() error {
	for _, b := range r.bufs {
		b.Close()
	}
	r.bufs = nil
	return nil
}

// end fills r with the final decision, keeping the buffers it made and
// the Decision recorded so far (Replay's).
func (r *Result) end(res Result) *Result {
	res.ch, res.bufs, res.rec = r.ch, r.bufs, r.rec
	*r = res
	if r.rec != nil {
		r.Decision = r.rec.decision(r)
		r.rec = nil
	}
	return r
}

// newBuffer returns a buffer in the chain's spool, if any.
func (r *Result) newBuffer(sizeHint int64) buffer {
	if r.ch.spool == nil {
		return &memBuffer{}
	}
	b := r.ch.spool.NewBuffer(sizeHint)
	r.bufs = append(r.bufs, b)
	return b
}

func (r *Result) newHeaderBuffer() buffer { return r.newBuffer(0) }

// discard releases a buffer the run did not use.
func (r *Result) discard(b buffer) {
	for i, sb := range r.bufs {
		if buffer(sb) == b {
			sb.Close()
			r.bufs = append(r.bufs[:i], r.bufs[i+1:]...)
			return
		}
	}
}

func bufferErr(b buffer) error {
	if sb, ok := b.(*spool.Buffer); ok {
		return sb.Err()
	}
	return nil
}

var errAbandoned = errors.New("filter did not finish within its timeout")
