package app

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

// The metrics keys default to off and a 5s check, and are checked with
// their key paths.
func TestMetricsConfig(t *testing.T) {
	cfg, err := ParseConfig([]byte("listen: 127.0.0.1:1110\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Metrics.Listen != "" || cfg.Metrics.CheckInterval.D() != 5*time.Second || cfg.Log.Caller {
		t.Errorf("defaults: %+v, log.caller %v", cfg.Metrics, cfg.Log.Caller)
	}
	cfg, err = ParseConfig([]byte("metrics:\n  listen: \"127.0.0.1:9110\"\n  check_interval: 2s\nlog:\n  caller: true\n"))
	if err != nil || cfg.Metrics.Listen != "127.0.0.1:9110" || cfg.Metrics.CheckInterval.D() != 2*time.Second || !cfg.Log.Caller {
		t.Errorf("ParseConfig = %+v, %v", cfg, err)
	}
	for doc, want := range map[string]string{
		"metrics:\n  listen: 9110\n":                      "metrics.listen: must be host:port",
		"metrics:\n  listen: \"127.0.0.1:1110\"\n":        "metrics.listen: 127.0.0.1:1110 is also listen",
		"metrics:\n  check_interval: 0s\n":                "metrics.check_interval: must be greater than 0",
		"metrics:\n  listen: \"mail.example.com:9110\"\n": "metrics.listen: host must be an IP address or localhost",
		"metrics:\n  lisen: \"127.0.0.1:9110\"\n":         "metrics.lisen",
	} {
		if _, err := ParseConfig([]byte(doc)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", doc, err, want)
		}
	}
}

// -check's scanner pings: every scanner that does not answer is a problem
// under its address key; filters without a daemon are not asked.
func TestCheckScanners(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	cfg, err := ParseConfig([]byte(fmt.Sprintf("filters:\n  - type: header\n    add: {X-A: b}\n  - type: spamassassin\n    address: tcp://%s\n", dead)))
	if err != nil {
		t.Fatal(err)
	}
	err = checkScanners(cfg)
	if err == nil || !strings.Contains(err.Error(), "1 problem(s):\n  - filters[1].address: spamd at tcp://"+dead+" does not answer: connection refused") {
		t.Errorf("checkScanners = %v", err)
	}
	cfg, _ = ParseConfig([]byte("filters:\n  - type: header\n    add: {X-A: b}\n"))
	if err := checkScanners(cfg); err != nil {
		t.Errorf("no scanner, yet: %v", err)
	}
}

// Without metrics.listen the observers are nil, so nothing is recorded;
// with it they report, and the listener's address is taken.
func TestObservability(t *testing.T) {
	cfg, _ := ParseConfig([]byte("listen: 127.0.0.1:1110\n"))
	o, err := startObservability(cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if o.serverObserver() != nil || o.filterObserver() != nil || o.relayObserver() != nil {
		t.Error("observers without metrics.listen")
	}
	o.close()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg.Metrics.Listen = ln.Addr().String()
	if _, err := startObservability(cfg, zaptest.NewLogger(t)); err == nil || !strings.Contains(err.Error(), "metrics.listen") {
		t.Errorf("metrics.listen taken: %v", err)
	}
	cfg.Metrics.Listen = "127.0.0.1:0"
	o, err = startObservability(cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer o.close()
	if o.serverObserver() == nil || o.filterObserver() == nil || o.relayObserver() == nil {
		t.Error("no observers with metrics.listen")
	}
}
