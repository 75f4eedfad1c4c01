package app

import (
	"errors"
	"testing"
	"time"
)

// superviseService is the Windows service's control loop. The service
// manager's requests arrive on a channel here as they do from
// golang.org/x/sys/windows/svc: ParamChange asks serve for a reload,
// Stop starts a drain (serve's stop channel closes) and is reported as a
// pending stop with a growing check point until serve returns, a second
// Stop does not close the channel twice, Interrogate repeats the current
// state, and serve's error is the service's.
func TestSuperviseServiceStop(t *testing.T) {
	requests := make(chan serviceRequest)
	reports := make(chan serviceState, 100)
	stopSeen := make(chan struct{})
	finish := make(chan struct{})
	wantErr := errors.New("drained badly")
	result := make(chan error, 1)
	reloads := make(chan struct{}, 10)
	var pending func() int // reloads asked for and not yet taken
	go func() {
		result <- superviseService(requests, func(s serviceState) { reports <- s }, func(stop, reload <-chan struct{}) error {
			pending = func() int { return len(reload) }
			for {
				select {
				case <-reload:
					reloads <- struct{}{}
					continue
				case <-stop:
				}
				break
			}
			close(stopSeen)
			<-finish // the drain takes a while
			return wantErr
		})
	}()

	next := func() serviceState {
		t.Helper()
		select {
		case s := <-reports:
			return s
		case <-time.After(10 * time.Second):
			t.Fatal("no status reported")
			return serviceState{}
		}
	}
	if s := next(); !s.running || !s.accepts {
		t.Fatalf("first report %+v, want running and accepting stop", s)
	}
	requests <- requestReload
	select {
	case <-reloads:
	case <-time.After(10 * time.Second):
		t.Fatal("ParamChange did not reach serve as a reload")
	}
	requests <- requestOther // ignored: no report, no stop
	requests <- requestInterrogate
	if s := next(); !s.running {
		t.Fatalf("interrogated while running: %+v", s)
	}
	select {
	case <-stopSeen:
		t.Fatal("serve was stopped before any stop request")
	default:
	}

	requests <- requestStop
	s := next()
	if s.running || s.accepts || s.waitHint <= 0 || s.checkPoint != 1 {
		t.Fatalf("after Stop: %+v, want a pending stop with a wait hint, refusing further stops", s)
	}
	select {
	case <-stopSeen:
	case <-time.After(10 * time.Second):
		t.Fatal("Stop did not close serve's stop channel")
	}
	requests <- requestStop   // Shutdown after Stop: no second close (it would panic)
	requests <- requestReload // ignored while draining
	// The drain goes on: the service manager sees progress.
	if s := next(); s.running || s.checkPoint < 2 {
		t.Fatalf("while draining: %+v, want a pending stop with a later check point", s)
	}
	requests <- requestInterrogate
	if s := next(); s.running {
		t.Fatalf("interrogated while draining: %+v", s)
	}
	if len(reloads) != 0 || pending() != 0 {
		t.Error("a reload was asked for during the drain")
	}
	close(finish)
	select {
	case err := <-result:
		if err != wantErr {
			t.Fatalf("superviseService returned %v, want serve's error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("superviseService did not return after serve did")
	}
}

// A proxy that stops by itself (SHUTDOWN, a listener failing) ends the
// service without any request.
func TestSuperviseServiceServeReturns(t *testing.T) {
	err := superviseService(make(chan serviceRequest), func(serviceState) {}, func(_, _ <-chan struct{}) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
}
