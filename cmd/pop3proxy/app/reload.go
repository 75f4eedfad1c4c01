package app

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"

	"github.com/hashicorp/go-multierror"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.yaml.in/yaml/v3"

	"github.com/pop3proxy/pop3proxy/filter"
	"github.com/pop3proxy/pop3proxy/filter/spool"
	"github.com/pop3proxy/pop3proxy/proxy"
	"github.com/pop3proxy/pop3proxy/proxy/pop3server"
	"github.com/pop3proxy/pop3proxy/proxy/verdictcache"
)

// instance is a running proxy: the POP3 server, its listeners and what
// the sessions of each configuration use. Its methods run in run's
// goroutine, one at a time; only generation.close comes from elsewhere.
type instance struct {
	configPath   string // re-read by reload
	logs         *logging
	log          *zap.Logger
	stats        *proxy.Stats        // over all generations
	cache        *verdictcache.Cache // over all generations; nil for none
	obs          *observability
	requestDrain func(why string)

	srv       *pop3server.Server
	cfg       *Config     // in use for new connections
	gen       *generation // of cfg
	listeners []*servedListener

	serveErr chan error     // the first listener that failed for good
	wg       sync.WaitGroup // one per served listener

	mu   sync.Mutex
	live map[*generation]struct{} // not yet closed
}

// generation is what the connections accepted under one configuration
// use: the gateway with its filter chain, and the spool. When a reload
// replaces it, the server keeps it for the connections that started with
// it and releases it (pop3server.Options.OnRelease) after the last one has
// ended; only then are its filter plugins closed, so no open session loses
// a scanner while it runs.
type generation struct {
	inst  *instance
	gw    *proxy.Gateway
	chain *filter.Chain
	spool *sharedSpool
	once  sync.Once
}

// close closes the chain and lets go of the spool; it may run more than
// once, from a connection's goroutine or at exit.
func (g *generation) close() {
	g.once.Do(func() {
		if err := g.chain.Close(); err != nil {
			g.inst.log.Warn("closing the filters of a replaced configuration", zap.Error(err))
		}
		g.spool.release()
		g.inst.mu.Lock()
		delete(g.inst.live, g)
		g.inst.mu.Unlock()
	})
}

// sharedSpool is a spool and the generations that use it. A reload keeps
// the spool, and with it the one memory budget, unless spool_dir or
// limits.buffer_memory changed; then new messages use a new one, and the
// old one is closed when the last session holding it has ended.
type sharedSpool struct {
	sp     *spool.Spool
	dir    string // spool_dir as configured
	memory int64  // limits.buffer_memory

	mu     sync.Mutex
	users  int
	closed bool
}

func newSharedSpool(cfg *Config) (*sharedSpool, error) {
	memory := int64(cfg.Limits.BufferMemory)
	sp, err := spool.New(spool.Options{Memory: memory, Dir: cfg.SpoolDir})
	if err != nil {
		return nil, fmt.Errorf("spool_dir: %w", err)
	}
	return &sharedSpool{sp: sp, dir: cfg.SpoolDir, memory: memory}, nil
}

// fits reports whether cfg asks for this spool.
func (s *sharedSpool) fits(cfg *Config) bool {
	return s.dir == cfg.SpoolDir && s.memory == int64(cfg.Limits.BufferMemory)
}

func (s *sharedSpool) acquire() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users++
}

// release closes the spool when its last user lets go of it.
func (s *sharedSpool) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.users--; s.users == 0 {
		s.closeLocked()
	}
}

func (s *sharedSpool) closeLocked() {
	if !s.closed {
		s.closed = true
		s.sp.Close()
	}
}

// closeUnused closes a spool no generation has taken.
func (s *sharedSpool) closeUnused() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.users == 0 {
		s.closeLocked()
	}
}

// newGeneration builds the gateway and filter chain of cfg on sp.
func (inst *instance) newGeneration(cfg *Config, sp *sharedSpool) (*generation, error) {
	gw, chain, err := newGateway(cfg, sp.sp, inst.stats, inst.obs, inst.cache, inst.log)
	if err != nil {
		return nil, err
	}
	sp.acquire()
	g := &generation{inst: inst, gw: gw, chain: chain, spool: sp}
	inst.mu.Lock()
	inst.live[g] = struct{}{}
	inst.mu.Unlock()
	return g, nil
}

// closeAll closes every generation still open, at exit: after a drain that
// timed out, connections of replaced ones may not have ended.
func (inst *instance) closeAll() {
	inst.mu.Lock()
	gens := make([]*generation, 0, len(inst.live))
	for g := range inst.live {
		gens = append(gens, g)
	}
	inst.mu.Unlock()
	for _, g := range gens {
		g.close()
	}
}

// serverOptions are the POP3 server's options for cfg, serving gen.
func (inst *instance) serverOptions(cfg *Config, gen *generation) (pop3server.Options, *certReloader, error) {
	opts, certs, err := serverOptions(cfg, inst.log)
	if err != nil {
		return opts, nil, err
	}
	opts.Backend = gen.gw
	opts.Observer = inst.obs.serverObserver()
	opts.OnShutdown = func() { inst.requestDrain("SHUTDOWN command") }
	opts.OnRelease = gen.close
	return opts, certs, nil
}

// serve runs the server on l until l is closed or the server shuts down.
func (inst *instance) serve(l *servedListener) {
	serve := inst.srv.Serve
	if l.tls {
		serve = inst.srv.ServeTLS
	}
	key := l.key // a reload may rename a listener it keeps
	inst.wg.Go(func() {
		err := serve(l.ln)
		if l.closed.Load() || errors.Is(err, pop3server.ErrServerClosed) {
			return
		}
		select {
		case inst.serveErr <- fmt.Errorf("%s: %w", key, err):
		default:
		}
	})
}

// reload re-reads the configuration file and applies it to the connections
// accepted from now on; connections already open finish with the
// configuration they started with (their backend, filter chain, limits).
// A file that does not load, or a part that cannot be set up (a filter, a
// certificate, a listener address), changes nothing: the error is logged
// and the previous configuration stays. Whatever happens, the proxy goes
// on running.
func (inst *instance) reload(why string) {
	cfg, err := LoadConfig(inst.configPath)
	if err != nil {
		inst.log.Error("configuration reload refused; the previous configuration stays in use",
			append([]zap.Field{zap.String("trigger", why), zap.String("config", inst.configPath)}, problemFields(err)...)...)
		return
	}
	fields, err := inst.apply(cfg)
	if err != nil {
		inst.log.Error("configuration reload failed; the previous configuration stays in use",
			append([]zap.Field{zap.String("trigger", why), zap.String("config", inst.configPath)}, problemFields(err)...)...)
		return
	}
	inst.log.Info("configuration reloaded", append([]zap.Field{zap.String("trigger", why), zap.String("config", inst.configPath)}, fields...)...)
}

// problemFields logs a configuration error as the list of its problems.
func problemFields(err error) []zap.Field {
	var me *multierror.Error
	if errors.As(err, &me) {
		problems := make([]string, len(me.Errors))
		for i, e := range me.Errors {
			problems[i] = e.Error()
		}
		return []zap.Field{zap.Int("problem_count", len(problems)), zap.Strings("problems", problems)}
	}
	return []zap.Field{zap.Error(err)}
}

// apply switches to cfg in two steps: everything that can fail is set up
// first (spool, gateway and filter chain, certificate, server options, new
// listeners) and undone if anything does; then the server takes the new
// options and the listeners are swapped. It returns the fields of the
// summary log line.
func (inst *instance) apply(cfg *Config) (_ []zap.Field, err error) {
	old := inst.cfg
	sp := inst.gen.spool
	if !sp.fits(cfg) {
		if sp, err = newSharedSpool(cfg); err != nil {
			return nil, err
		}
		defer func() {
			if err != nil {
				sp.closeUnused()
			}
		}()
	}
	gen, err := inst.newGeneration(cfg, sp)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			gen.close()
		}
	}()
	opts, certs, err := inst.serverOptions(cfg, gen)
	if err != nil {
		return nil, err
	}
	plan, err := inst.planListeners(cfg)
	if err != nil {
		return nil, err
	}
	if err := inst.srv.Reconfigure(opts); err != nil {
		plan.abort()
		return nil, fmt.Errorf("server options: %w", err)
	}

	// Committed: the old generation is released by the server once its
	// last connection has ended.
	newSpool := sp != inst.gen.spool
	inst.cfg, inst.gen = cfg, gen
	inst.obs.useChain(gen.chain)
	opened, closed := inst.swapListeners(cfg, plan)
	level, _ := zapcore.ParseLevel(cfg.Log.Level) // validated when the config was loaded
	inst.logs.level.SetLevel(level)

	changed := changedKeys(old, cfg)
	fields := []zap.Field{
		zap.Strings("changed", changed),
		zap.Strings("filters", gen.chain.Names()),
		zap.Stringer("log_level", level),
	}
	if len(opened) > 0 || len(closed) > 0 {
		fields = append(fields, zap.Strings("listeners_opened", opened), zap.Strings("listeners_closed", closed))
	}
	if newSpool {
		fields = append(fields, zap.String("spool_dir", sp.sp.Dir()), zap.Int64("buffer_memory", sp.memory))
	}
	if certs != nil {
		fields = append(fields, zap.Dict("tls_certificate", certs.loadedFields()...))
	}
	if keys := restartNeeded(changed); len(keys) > 0 {
		fields = append(fields, zap.Strings("restart_needed", keys))
	}
	return fields, nil
}

// restartOnly are the keys, and sections, that a reload reads but cannot
// apply: the one logger, the metrics listener and the verdict cache are
// built once (the cache outlives the generations, whose chains' entries
// it tells apart by fingerprint).
var restartOnly = []string{"log.format", "log.caller", "metrics", "cache"}

// restartNeeded returns the changed keys that take effect only after a
// restart.
func restartNeeded(changed []string) []string {
	var out []string
	for _, k := range changed {
		for _, r := range restartOnly {
			if k == r || strings.HasPrefix(k, r+".") {
				out = append(out, k)
			}
		}
	}
	return out
}

// listenerPlan is how the listeners change: kept ones go on accepting
// without interruption, closed ones stop, opened ones are bound already,
// and deferred ones take an address that a closed one holds.
type listenerPlan struct {
	keep     []*servedListener
	update   []listenSpec // the new spec of each kept listener
	closing  []*servedListener
	opened   []*servedListener
	deferred []listenSpec
}

// planListeners matches cfg's listeners with the open ones and binds the
// new addresses, so that an address that cannot be bound refuses the
// reload before anything has changed.
func (inst *instance) planListeners(cfg *Config) (*listenerPlan, error) {
	plan := &listenerPlan{}
	matched := make(map[*servedListener]bool)
	var toOpen []listenSpec
	for _, spec := range listenSpecs(cfg) {
		var same *servedListener
		for _, l := range inst.listeners {
			if !matched[l] && l.sameSocket(spec) {
				same = l
				break
			}
		}
		if same != nil {
			matched[same] = true
			plan.keep = append(plan.keep, same)
			plan.update = append(plan.update, spec)
			continue
		}
		toOpen = append(toOpen, spec)
	}
	for _, l := range inst.listeners {
		if !matched[l] {
			plan.closing = append(plan.closing, l)
		}
	}
	for _, spec := range toOpen {
		held := false
		for _, l := range plan.closing {
			held = held || l.addr == spec.addr
		}
		if held {
			plan.deferred = append(plan.deferred, spec)
			continue
		}
		l, err := openListener(spec, cfg, inst.log)
		if err != nil {
			plan.abort()
			return nil, err
		}
		plan.opened = append(plan.opened, l)
	}
	return plan, nil
}

// abort closes the listeners the plan opened.
func (p *listenerPlan) abort() {
	for _, l := range p.opened {
		l.ln.Close()
	}
}

// swapListeners carries out plan and returns the listeners opened and
// closed, as "key address". A deferred listener that cannot be bound even
// after its address was freed is logged; the rest of the reload stands.
func (inst *instance) swapListeners(cfg *Config, plan *listenerPlan) (opened, closed []string) {
	trusted := trustedPrefixes(cfg)
	var now []*servedListener
	for i, l := range plan.keep {
		l.listenSpec = plan.update[i]
		if l.header != nil {
			if err := l.header.update(trusted, cfg.ProxyProtocol.HeaderTimeout.D()); err != nil {
				inst.log.Error("PROXY listener keeps its previous settings", zap.String("listener", l.key), zap.Error(err))
			}
		}
		now = append(now, l)
	}
	for _, l := range plan.closing {
		l.closed.Store(true)
		l.ln.Close()
		closed = append(closed, l.key+" "+l.addr)
	}
	for _, spec := range plan.deferred {
		l, err := openListener(spec, cfg, inst.log)
		if err != nil {
			inst.log.Error("listener not opened", zap.String("listener", spec.key), zap.Error(err))
			continue
		}
		plan.opened = append(plan.opened, l)
	}
	for _, l := range plan.opened {
		inst.serve(l)
		now = append(now, l)
		opened = append(opened, l.key+" "+l.ln.Addr().String())
	}
	inst.listeners = now
	return opened, closed
}

// changedKeys lists the configuration keys whose values differ, down to
// the keys of each section ("limits.max_connections"); a list (filters,
// upstream.allow) counts as one key.
func changedKeys(a, b *Config) []string {
	changed := []string{}
	diffStruct(reflect.ValueOf(*a), reflect.ValueOf(*b), "", &changed)
	return changed
}

var nodesType = reflect.TypeFor[[]yaml.Node]()

func diffStruct(a, b reflect.Value, prefix string, out *[]string) {
	t := a.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !f.IsExported() || name == "" || name == "-" {
			continue
		}
		path := prefix + name
		av, bv := a.Field(i), b.Field(i)
		switch {
		case f.Type.Kind() == reflect.Struct:
			diffStruct(av, bv, path+".", out)
		case f.Type == nodesType:
			// The filter blocks as the verdict cache compares them: not
			// their comments, layout or line numbers.
			if filter.FingerprintOf(av.Interface().([]yaml.Node)) != filter.FingerprintOf(bv.Interface().([]yaml.Node)) {
				*out = append(*out, path)
			}
		case f.Type.Kind() == reflect.Slice && av.Len() == 0 && bv.Len() == 0:
			// "key: []" and no key at all say the same.
		case !reflect.DeepEqual(av.Interface(), bv.Interface()):
			*out = append(*out, path)
		}
	}
}
