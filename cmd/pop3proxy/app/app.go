// Package app is the pop3proxy program: flags, configuration, logging,
// listeners, signals, reload and drain. It lives in a package, not in main, so that a
// build with extra filter plugins is one file (see examples/filterplugin):
//
//	import (
//		_ "example.com/my/plugin"
//		"github.com/pop3proxy/pop3proxy/cmd/pop3proxy/app"
//	)
//
//	func main() { app.Main() }
package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"runtime/debug"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/pop3proxy/pop3proxy/proxy"
	"github.com/pop3proxy/pop3proxy/proxy/pop3server"
)

// Main runs pop3proxy with the command line arguments and exits.
func Main() {
	configPath := flag.String("config", "config.yaml", "path of the YAML configuration `FILE`")
	check := flag.Bool("check", false, "validate the configuration file and exit")
	version := flag.Bool("version", false, "print the version and exit")
	probeURL := flag.String("probe", "", probeUsage)          // probe.go
	serviceAction := flag.String("service", "", serviceUsage) // service*.go
	flag.Usage = func() { printUsage(flag.CommandLine) }
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "pop3proxy: unexpected argument %q\n\n", flag.Arg(0))
		flag.Usage()
		os.Exit(2)
	}
	if *version {
		fmt.Println(versionLine(debug.ReadBuildInfo()))
		return
	}
	if *probeURL != "" {
		os.Exit(runProbe(*probeURL, os.Stdout, os.Stderr))
	}
	if *serviceAction != "" {
		if err := serviceCommand(*serviceAction, *configPath, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "pop3proxy:", err)
			os.Exit(1)
		}
		return
	}

	cfg, err := LoadConfig(*configPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pop3proxy:", err)
		os.Exit(2)
	}
	if *check {
		// metrics.go: a scanner that does not answer is a problem too.
		if err := checkScanners(cfg); err != nil {
			fmt.Fprintf(os.Stderr, "pop3proxy: config %s: %v\n", *configPath, err)
			os.Exit(1)
		}
		fmt.Println("configuration ok")
		return
	}
	// Before the logger: a Windows service's log goes to a file.
	asService, err := startedAsService(*configPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pop3proxy:", err)
		os.Exit(2)
	}
	logs, err := newLogging(cfg.Log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pop3proxy:", err)
		os.Exit(2)
	}
	defer logs.log.Sync() //nolint:errcheck // nothing useful to do on exit

	serve := func(stop, reload <-chan struct{}) error { return run(*configPath, cfg, logs, stop, reload) }
	if asService {
		err = runService(serve) // Stop and Shutdown close stop, ParamChange reloads
	} else {
		err = serve(nil, nil)
	}
	if err != nil {
		logs.log.Error("stopped", zap.Error(err))
		os.Exit(1)
	}
}

// usageText goes before the flags in -help.
const usageText = `pop3proxy is a filtering POP3 proxy. Mail clients log in to it as
user%%host:port; it logs in to that server with the same password and
passes every retrieved message through the configured filters (ClamAV,
SpamAssassin, rspamd, header rewriting, external programs).

Usage:
  pop3proxy [-config FILE]          serve
  pop3proxy -check [-config FILE]   validate the configuration and exit
  pop3proxy -version                print the version and exit

Flags:
`

// usageTail goes after the flags in -help.
const usageTail = `
Signals: SIGTERM or SIGINT drains (logged-in sessions may finish, a second
signal ends them); SIGHUP reloads the configuration file.

The configuration is YAML. Every key is optional: an empty file means all
defaults (listen on 127.0.0.1:1110). config.yaml.example lists every key
with comments; README.md, "Configuration", has the table of keys and
defaults, and "Reloading the configuration" what a reload changes. Both
come with the source: https://github.com/pop3proxy/pop3proxy
`

// printUsage writes the -help text to the flag set's output.
func printUsage(fs *flag.FlagSet) {
	w := fs.Output()
	fmt.Fprintf(w, usageText)
	fs.PrintDefaults()
	fmt.Fprint(w, usageTail)
}

// logging is the process's one logger and the level a reload changes.
type logging struct {
	log   *zap.Logger
	level zap.AtomicLevel
}

func newLogging(c LogConfig) (*logging, error) {
	level, err := zapcore.ParseLevel(c.Level)
	if err != nil {
		return nil, err
	}
	zc := zap.NewProductionConfig()
	if c.Format == "console" {
		zc = zap.NewDevelopmentConfig()
		zc.Development = false
		zc.DisableStacktrace = true
	}
	zc.Level = zap.NewAtomicLevelAt(level)
	zc.Sampling = nil
	zc.DisableCaller = !c.Caller
	zc.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	log, err := zc.Build()
	if err != nil {
		return nil, err
	}
	return &logging{log: log, level: zc.Level}, nil
}

// run serves cfg, read from configPath, until a drain has finished. A
// drain starts on SIGTERM or SIGINT, on the SHUTDOWN command, or when stop
// is closed (a Windows service's Stop; nil: never). A reload, on SIGHUP or
// a value on reload (nil: none but SIGHUP), re-reads configPath (see
// instance.reload); it never stops the proxy.
func run(configPath string, cfg *Config, logs *logging, stop, reload <-chan struct{}) error {
	log := logs.log
	inst := &instance{
		configPath: configPath,
		logs:       logs,
		log:        log,
		stats:      new(proxy.Stats),
		cfg:        cfg,
		serveErr:   make(chan error, 1),
		live:       make(map[*generation]struct{}),
	}
	drainRequested := make(chan string, 1)
	inst.requestDrain = func(why string) {
		select {
		case drainRequested <- why:
		default:
		}
	}
	// Caught from the start, so that a signal during startup waits for
	// the proxy to serve instead of ending it.
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, stopSignals...)
	defer signal.Stop(signals)
	reloadSignal := make(chan os.Signal, 1)
	if len(reloadSignals) > 0 { // none would mean all signals
		signal.Notify(reloadSignal, reloadSignals...)
		defer signal.Stop(reloadSignal)
	}

	// metrics.go: /metrics, /healthz, /readyz and the scanner checks.
	obs, err := startObservability(cfg, log)
	if err != nil {
		return err
	}
	defer obs.close()
	inst.obs = obs

	inst.cache = newCache(cfg, log)
	defer inst.cache.Close()

	sp, err := newSharedSpool(cfg)
	if err != nil {
		return err
	}
	log.Info("message spool", zap.String("dir", sp.sp.Dir()), zap.Int64("buffer_memory", sp.memory))
	gen, err := inst.newGeneration(cfg, sp)
	if err != nil {
		sp.closeUnused()
		return err
	}
	inst.gen = gen
	defer inst.closeAll()
	for _, name := range gen.chain.Names() {
		log.Info("filter enabled", zap.String("filter", name))
	}
	obs.useChain(gen.chain)
	if cfg.denyPrivate() {
		log.Info("destinations on loopback, link-local and private addresses are refused (upstream.allow_private)")
	}
	opts, certs, err := inst.serverOptions(cfg, gen)
	if err != nil {
		return err
	}
	if certs != nil {
		log.Info("TLS certificate loaded", certs.loadedFields()...)
	}
	if inst.srv, err = pop3server.NewServer(opts); err != nil {
		return err
	}
	if inst.listeners, err = openListeners(cfg, log); err != nil {
		return err
	}

	for _, l := range inst.listeners {
		inst.serve(l)
		logListening(log, l)
	}
	obs.setServing(true)

	var why string
serving:
	for {
		select {
		case sig := <-signals:
			why = sig.String()
			break serving
		case <-stop:
			why = "stop requested"
			break serving
		case why = <-drainRequested:
			break serving
		case sig := <-reloadSignal:
			inst.reload(sig.String())
		case <-reload:
			inst.reload("reload requested")
		case err := <-inst.serveErr:
			inst.srv.Close()
			return fmt.Errorf("serving: %w", err)
		}
	}
	obs.setServing(false)
	defer logStats(log, inst.stats)
	// A reload signal during the drain is logged and otherwise ignored:
	// its default action would end the process.
	drained := make(chan struct{})
	defer close(drained)
	go func() {
		for {
			select {
			case sig := <-reloadSignal:
				log.Warn("reload ignored: draining", zap.String("signal", sig.String()))
			case <-drained:
				return
			}
		}
	}()
	return drain(inst.srv, log, why, inst.cfg.Shutdown.DrainTimeout.D(), signals, &inst.wg)
}

// drain stops accepting, lets logged-in sessions finish until they QUIT,
// and after timeout (or a second signal) closes what is left without
// committing anything.
func drain(srv *pop3server.Server, log *zap.Logger, why string, timeout time.Duration, signals <-chan os.Signal, wg *sync.WaitGroup) error {
	log.Info("draining", zap.String("reason", why), zap.Duration("timeout", timeout))
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	go func() {
		select {
		case sig := <-signals:
			log.Warn("second signal, closing all sessions now", zap.String("signal", sig.String()))
			cancel()
		case <-ctx.Done():
		}
	}()
	err := srv.Shutdown(ctx)
	wg.Wait()
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		log.Warn("drain incomplete: remaining sessions closed without committing deletions")
		return nil
	}
	if err != nil {
		return err
	}
	log.Info("drained")
	return nil
}

// logStats reports what the filter chain did over the proxy's lifetime.
func logStats(log *zap.Logger, st *proxy.Stats) {
	log.Info("filter statistics",
		zap.Int64("scanned", st.Scanned.Load()),
		zap.Int64("over_max_size", st.Oversize.Load()),
		zap.Int64("replaced", st.Replaced.Load()),
		zap.Int64("refused", st.Refused.Load()),
		zap.Int64("tempfailed", st.TempFailed.Load()),
		zap.Int64("kept_alive", st.KeptAlive.Load()),
		zap.Int64("replayed", st.Replayed.Load()),
		zap.Int64("scanned_ahead", st.Prefetched.Load()))
}

func addrAllowed(addr net.Addr, allow []netip.Prefix) bool {
	ip, ok := clientIP(addr)
	if !ok {
		return false
	}
	for _, p := range allow {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
