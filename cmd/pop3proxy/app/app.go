// Package app is the pop3proxy program: flags, configuration, logging,
// listener, signals and drain. It lives in a package, not in main, so that a
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
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/pop3proxy/pop3proxy/filter/spool"
	"github.com/pop3proxy/pop3proxy/proxy"
	"github.com/pop3proxy/pop3proxy/proxy/pop3server"
)

// Main runs pop3proxy with the command line arguments and exits.
func Main() {
	configPath := flag.String("config", "config.yaml", "path of the YAML configuration file")
	check := flag.Bool("check", false, "validate the configuration and exit")
	flag.Parse()

	cfg, err := LoadConfig(*configPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pop3proxy:", err)
		os.Exit(2)
	}
	if *check {
		fmt.Println("configuration ok")
		return
	}
	log, err := newLogger(cfg.Log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pop3proxy:", err)
		os.Exit(2)
	}
	defer log.Sync() //nolint:errcheck // nothing useful to do on exit

	if err := run(cfg, log); err != nil {
		log.Error("stopped", zap.Error(err))
		os.Exit(1)
	}
}

func newLogger(c LogConfig) (*zap.Logger, error) {
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
	return zc.Build()
}

// run serves until a drain (SIGTERM, SIGINT or SHUTDOWN) has finished.
func run(cfg *Config, log *zap.Logger) error {
	sp, err := spool.New(spool.Options{Memory: int64(cfg.Limits.BufferMemory), Dir: cfg.SpoolDir})
	if err != nil {
		return fmt.Errorf("spool_dir: %w", err)
	}
	defer sp.Close()
	log.Info("message spool", zap.String("dir", sp.Dir()), zap.Int64("buffer_memory", int64(cfg.Limits.BufferMemory)))
	backend, err := newGateway(cfg, sp, log)
	if err != nil {
		return err
	}
	drainRequested := make(chan string, 1)
	requestDrain := func(why string) {
		select {
		case drainRequested <- why:
		default:
		}
	}
	opts, err := serverOptions(cfg, log)
	if err != nil {
		return err
	}
	opts.Backend = backend
	opts.OnShutdown = func() { requestDrain("SHUTDOWN command") }
	srv, err := pop3server.NewServer(opts)
	if err != nil {
		return err
	}
	listeners, err := openListeners(cfg, log)
	if err != nil {
		return err
	}

	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(signals)

	var wg sync.WaitGroup
	serveErr := make(chan error, len(listeners))
	for _, l := range listeners {
		serve := srv.Serve
		if l.tls {
			serve = srv.ServeTLS
		}
		wg.Go(func() { serveErr <- serve(l.ln) })
	}

	var why string
	select {
	case sig := <-signals:
		why = sig.String()
	case why = <-drainRequested:
	case err := <-serveErr:
		srv.Close()
		return fmt.Errorf("serving: %w", err)
	}
	defer logStats(log, backend.Stats())
	return drain(srv, log, why, cfg.Shutdown.DrainTimeout.D(), signals, &wg)
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
		zap.Int64("kept_alive", st.KeptAlive.Load()))
}

func addrAllowed(addr net.Addr, allow []netip.Prefix) bool {
	if _, ok := addr.(balancerAddr); ok {
		return false
	}
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		return false
	}
	ip := ap.Addr().Unmap()
	for _, p := range allow {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
