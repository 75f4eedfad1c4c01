package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/pop3proxy/pop3proxy/filter"
)

// pingTimeout bounds one round of scanner pings, whatever the filters'
// own timeouts: a scanner that takes longer to say PONG is not ready.
const pingTimeout = 5 * time.Second

// Health knows whether the proxy is ready: its listeners are up and every
// scanner of the current filter chain answered its last ping. The pings
// run in the background every interval, never per request, so a busy
// load balancer costs the scanners nothing.
type Health struct {
	log      *zap.Logger
	metrics  *Metrics // nil: no scanner_up and ready gauges
	interval time.Duration

	wake chan struct{} // a new chain to check now
	stop context.CancelFunc
	done chan struct{}

	mu      sync.Mutex
	serving bool
	chain   *filter.Chain
	checked bool                // the current chain has been pinged
	logged  map[string]bool     // filters whose failure has been logged
	results []filter.PingResult // the last round
}

// NewHealth returns a Health that pings every interval once started;
// metrics may be nil.
func NewHealth(log *zap.Logger, interval time.Duration, metrics *Metrics) *Health {
	return &Health{
		log: log, metrics: metrics, interval: interval,
		wake: make(chan struct{}, 1), logged: map[string]bool{},
	}
}

// Start runs the checks until Stop; repeat false checks each chain once
// (for the start-up log) and no more.
func (h *Health) Start(repeat bool) {
	ctx, cancel := context.WithCancel(context.Background())
	h.stop, h.done = cancel, make(chan struct{})
	go func() {
		defer close(h.done)
		var tick <-chan time.Time
		if repeat {
			t := time.NewTicker(h.interval)
			defer t.Stop()
			tick = t.C
		}
		for {
			select {
			case <-ctx.Done():
				return
			case <-h.wake:
			case <-tick:
			}
			h.check(ctx)
		}
	}()
}

// Stop ends the checks and waits for one under way.
func (h *Health) Stop() {
	if h.stop != nil {
		h.stop()
		<-h.done
	}
}

// UseChain makes ch the chain whose scanners are checked, at once: at
// start, and after a reload that built a new one.
func (h *Health) UseChain(ch *filter.Chain) {
	h.mu.Lock()
	h.chain, h.checked = ch, false
	h.mu.Unlock()
	h.update()
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// SetServing says whether the POP3 listeners accept connections: true once
// they serve, false when a drain starts.
func (h *Health) SetServing(serving bool) {
	h.mu.Lock()
	h.serving = serving
	h.mu.Unlock()
	h.update()
}

// check pings the scanners and logs what changed: a scanner that does not
// answer at ERROR (at the first check: "filter enabled, but its scanner
// does not answer"), one that answers again at INFO.
func (h *Health) check(ctx context.Context) {
	h.mu.Lock()
	ch := h.chain
	h.mu.Unlock()
	if ch == nil {
		return
	}
	pctx, cancel := context.WithTimeout(ctx, pingTimeout)
	results := ch.Ping(pctx)
	cancel()
	if ctx.Err() != nil {
		return // stopping: a ping cut short says nothing about the scanner
	}

	h.mu.Lock()
	if h.chain != ch {
		h.mu.Unlock()
		return // replaced while pinging; the new one is checked next
	}
	first := !h.checked
	h.checked, h.results = true, results
	var down, back []filter.PingResult
	for _, r := range results {
		if r.Err != nil {
			if !h.logged[r.Filter] {
				h.logged[r.Filter] = true
				down = append(down, r)
			}
		} else if h.logged[r.Filter] {
			delete(h.logged, r.Filter)
			back = append(back, r)
		}
	}
	h.mu.Unlock()

	for _, r := range down {
		msg := "scanner does not answer"
		if first {
			msg = "filter enabled, but its scanner does not answer"
		}
		h.log.Error(msg, pingFields(r)...)
	}
	for _, r := range back {
		h.log.Info("scanner answers again", zap.String("filter", r.Filter))
	}
	if h.metrics != nil {
		for _, r := range results {
			h.metrics.setScanner(r.Filter, r.Err == nil)
		}
	}
	h.update()
}

// pingFields describe a failed ping without repeating its words: the
// daemon and address as fields, the cause as the error.
func pingFields(r filter.PingResult) []zap.Field {
	fields := []zap.Field{zap.String("filter", r.Filter), zap.String("key", r.Key)}
	var pe *filter.PingError
	if errors.As(r.Err, &pe) {
		return append(fields, zap.String("scanner", pe.Daemon), zap.String("address", pe.Address), zap.Error(pe.Err))
	}
	return append(fields, zap.Error(r.Err))
}

// Ready reports whether the proxy is ready and, if not, why.
func (h *Health) Ready() (bool, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.readyLocked()
}

func (h *Health) readyLocked() (bool, string) {
	var why []string
	if !h.serving {
		why = append(why, "POP3 listeners not serving (starting or draining)")
	}
	if h.chain != nil && !h.checked {
		why = append(why, "scanners not checked yet")
	}
	for _, r := range h.results {
		if r.Err != nil {
			why = append(why, fmt.Sprintf("filter %s (%s): %s", r.Filter, r.Key, r.Err))
		}
	}
	return len(why) == 0, strings.Join(why, "\n")
}

func (h *Health) update() {
	if h.metrics == nil {
		return
	}
	ready, _ := h.Ready()
	h.metrics.setReady(ready)
}

// HTTPServer serves /metrics, /healthz and /readyz.
type HTTPServer struct {
	srv *http.Server
	ln  net.Listener
}

// Listen opens addr and serves /metrics, /healthz and /readyz on it.
func Listen(addr string, m *Metrics, h *Health, log *zap.Logger) (*HTTPServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		ready, why := h.Ready()
		if !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready:\n%s\n", why)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	s := &HTTPServer{ln: ln, srv: &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		ErrorLog:          zap.NewStdLog(log.Named("http")),
	}}
	go s.srv.Serve(ln)
	return s, nil
}

// Addr is the address it listens on.
func (s *HTTPServer) Addr() net.Addr { return s.ln.Addr() }

// Close stops serving, after at most a second for scrapes under way.
func (s *HTTPServer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		return s.srv.Close()
	}
	return nil
}
