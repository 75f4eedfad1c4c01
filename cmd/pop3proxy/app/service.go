package app

import "time"

// The Windows service mode without Windows, so that it is tested on every
// platform; service_windows.go adapts it to golang.org/x/sys/windows/svc.

const serviceUsage = "Windows service: `ACTION` is install (register pop3proxy to run with this -config, after checking it) or uninstall; see README, Install"

// serviceName is the name pop3proxy has in the Windows service manager
// (sc.exe, services.msc, the log file).
const serviceName = "pop3proxy"

// serviceRequest is what the service manager asks of a running service,
// reduced to what the proxy does about it.
type serviceRequest int

const (
	// requestInterrogate asks for the current status again.
	requestInterrogate serviceRequest = iota
	// requestStop is Stop (sc.exe stop, services.msc) or Shutdown (the
	// machine is going down): both drain.
	requestStop
	// requestReload is ParamChange (sc.exe control pop3proxy
	// paramchange): re-read the configuration, as SIGHUP on Unix.
	requestReload
	requestOther // anything the proxy does not accept
)

// serviceState is what superviseService reports to the service manager.
type serviceState struct {
	running bool // false: stop pending
	// accepts says whether Stop, Shutdown and ParamChange are accepted,
	// which is only while running: a drain is not started twice, nor a
	// reload asked for during one.
	accepts bool
	// waitHint is how long the service manager should wait for the next
	// report during a stop before it considers the service hung.
	waitHint time.Duration
	// checkPoint grows with every stop-pending report, to show progress.
	checkPoint uint32
}

// A pending stop is reported every stopReportInterval with a new check
// point; after stopWaitHint without one the service manager takes the
// service for hung. shutdown.drain_timeout bounds the drain.
const (
	stopReportInterval = 2 * time.Second
	stopWaitHint       = 10 * time.Second
)

// superviseService runs serve, turning the first stop request into closing
// stop (a drain, like SIGTERM) and a reload request into a value on reload
// (like SIGHUP), and reports each change of state. requests is never
// closed: the service manager's channel lives as long as the process.
func superviseService(requests <-chan serviceRequest, report func(serviceState), serve func(stop, reload <-chan struct{}) error) error {
	stop := make(chan struct{})
	// One pending reload is enough: requests that arrive while one waits
	// would re-read the same file.
	reload := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() { done <- serve(stop, reload) }()

	state := serviceState{running: true, accepts: true}
	report(state)
	var ticker *time.Ticker
	var tick <-chan time.Time
	defer func() {
		if ticker != nil {
			ticker.Stop()
		}
	}()
	for {
		select {
		case err := <-done:
			return err
		case req := <-requests:
			switch req {
			case requestInterrogate:
				report(state)
			case requestReload:
				if ticker == nil {
					select {
					case reload <- struct{}{}:
					default:
					}
				}
			case requestStop:
				if ticker != nil {
					continue // already draining
				}
				close(stop)
				ticker = time.NewTicker(stopReportInterval)
				tick = ticker.C
				state = serviceState{waitHint: stopWaitHint, checkPoint: 1}
				report(state)
			}
		case <-tick:
			state.checkPoint++
			report(state)
		}
	}
}
