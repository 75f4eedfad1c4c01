package app

// Operations visibility: the metrics.* keys, the HTTP listener for
// /metrics, /healthz and /readyz, the scanner checks at start-up and in
// -check. Prometheus itself is confined to internal/metrics.

import (
	"context"
	"time"

	"github.com/hashicorp/go-multierror"
	"go.uber.org/zap"

	"github.com/pop3proxy/pop3proxy/cmd/pop3proxy/app/internal/metrics"
	"github.com/pop3proxy/pop3proxy/filter"
	"github.com/pop3proxy/pop3proxy/proxy"
	"github.com/pop3proxy/pop3proxy/proxy/pop3server"
	"github.com/pop3proxy/pop3proxy/yamlconf"
)

// MetricsConfig is the HTTP listener for metrics and health checks.
type MetricsConfig struct {
	// Listen is where /metrics, /healthz and /readyz are served; "" (the
	// default) serves nothing and records no metrics.
	Listen string `yaml:"listen"`
	// CheckInterval is how often the scanners are pinged for /readyz.
	CheckInterval yamlconf.Duration `yaml:"check_interval"`
}

// defaultCheckInterval keeps a scanner's outage visible within seconds
// at one small request per scanner.
const defaultCheckInterval = 5 * time.Second

// checkTimeout bounds -check's pings.
const checkTimeout = 5 * time.Second

func (c *Config) validateMetrics(bad func(path, format string, args ...any)) {
	m := c.Metrics
	if m.Listen != "" {
		if _, err := isLoopbackListen(m.Listen); err != nil {
			bad("metrics.listen", "%v", err)
		}
		for _, l := range listenSpecs(c) {
			if l.addr == m.Listen {
				bad("metrics.listen", "%s is also %s", m.Listen, l.key)
			}
		}
	}
	positive(bad, "metrics.check_interval", m.CheckInterval)
}

// observability is what a running proxy reports to. Without
// metrics.listen it records nothing and serves nothing, but still checks
// the scanners once at start, so that one that does not answer is logged.
type observability struct {
	metrics *metrics.Metrics // nil without metrics.listen
	health  *metrics.Health
	http    *metrics.HTTPServer // nil without metrics.listen
}

// startObservability opens metrics.listen, if set, and starts the scanner
// checks; useChain gives them their chain.
func startObservability(cfg *Config, log *zap.Logger) (*observability, error) {
	o := &observability{}
	listen := cfg.Metrics.Listen
	if listen != "" {
		o.metrics = metrics.New()
	}
	o.health = metrics.NewHealth(log, cfg.Metrics.CheckInterval.D(), o.metrics)
	if listen != "" {
		srv, err := metrics.Listen(listen, o.metrics, o.health, log)
		if err != nil {
			return nil, listenError("metrics.listen", listen, err)
		}
		o.http = srv
		log.Info("serving metrics and health checks", zap.String("addr", srv.Addr().String()),
			zap.Duration("check_interval", cfg.Metrics.CheckInterval.D()))
	}
	o.health.Start(listen != "")
	return o, nil
}

// serverObserver, filterObserver and relayObserver are nil, observing
// nothing, without metrics.listen.
func (o *observability) serverObserver() pop3server.Observer {
	if o.metrics == nil {
		return nil
	}
	return o.metrics.Server()
}

func (o *observability) filterObserver() filter.Observer {
	if o.metrics == nil {
		return nil
	}
	return o.metrics.Filters()
}

func (o *observability) relayObserver() proxy.Observer {
	if o.metrics == nil {
		return nil
	}
	return o.metrics.Relay()
}

// useChain makes /readyz depend on ch's scanners: at start, and when a
// reload has put a new chain in service.
func (o *observability) useChain(ch *filter.Chain) { o.health.UseChain(ch) }

// setServing says whether the POP3 listeners serve: false when a drain
// starts, so that a load balancer stops sending clients.
func (o *observability) setServing(serving bool) { o.health.SetServing(serving) }

// close stops the checks and the HTTP listener.
func (o *observability) close() {
	o.health.Stop()
	if o.http != nil {
		o.http.Close()
	}
}

// checkScanners pings every scanner of cfg's filters, for -check, and
// returns those that do not answer as problems under their address keys.
func checkScanners(cfg *Config) error {
	chain, err := filter.Build(cfg.Filters, nil)
	if err != nil {
		return err // validate has reported it already
	}
	defer chain.Close()
	ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
	defer cancel()
	var result *multierror.Error
	for _, r := range chain.Ping(ctx) {
		if err := r.FieldError(); err != nil {
			result = multierror.Append(result, err)
		}
	}
	if result != nil {
		result.ErrorFormat = formatErrors
	}
	return result.ErrorOrNil()
}
