//go:build windows

package app

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/svc"
	"golang.org/x/sys/windows/svc/mgr"
)

// serviceLogName is the log file of the service mode, beside the
// configuration file: a service has no console for the standard error.
const serviceLogName = "pop3proxy.log"

// startedAsService reports whether the Windows service manager started
// this process. If it did, the standard error, where the log goes, is
// redirected (appended) to pop3proxy.log beside the configuration file;
// call it before the logger is built.
func startedAsService(configPath string) (bool, error) {
	inService, err := svc.IsWindowsService()
	if err != nil || !inService {
		return false, err
	}
	abs, err := filepath.Abs(configPath)
	if err != nil {
		return true, err
	}
	f, err := os.OpenFile(filepath.Join(filepath.Dir(abs), serviceLogName), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return true, fmt.Errorf("service log: %w", err)
	}
	// Both: os.Stderr for the Go code, the process handle for a panic's
	// trace, which the runtime writes to the handle.
	windows.SetStdHandle(windows.STD_ERROR_HANDLE, windows.Handle(f.Fd()))
	os.Stderr = f
	return true, nil
}

// runService runs serve under the service manager until it returns; Stop
// and Shutdown close its stop channel, which drains the proxy, and
// ParamChange sends on its reload channel, which re-reads the
// configuration.
func runService(serve func(stop, reload <-chan struct{}) error) error {
	h := &serviceHandler{serve: serve}
	if err := svc.Run(serviceName, h); err != nil {
		return err
	}
	return h.err
}

type serviceHandler struct {
	serve func(stop, reload <-chan struct{}) error
	err   error
}

// Execute is called by svc.Run; the service stops when it returns.
func (h *serviceHandler) Execute(_ []string, changes <-chan svc.ChangeRequest, status chan<- svc.Status) (bool, uint32) {
	status <- svc.Status{State: svc.StartPending}
	requests := make(chan serviceRequest)
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			var c svc.ChangeRequest
			select {
			case c = <-changes:
			case <-done:
				return
			}
			req := requestOther
			switch c.Cmd {
			case svc.Interrogate:
				req = requestInterrogate
			case svc.Stop, svc.Shutdown:
				req = requestStop
			case svc.ParamChange:
				req = requestReload
			}
			select {
			case requests <- req:
			case <-done:
				return
			}
		}
	}()
	report := func(s serviceState) {
		st := svc.Status{State: svc.StopPending, CheckPoint: s.checkPoint, WaitHint: uint32(s.waitHint / time.Millisecond)}
		if s.running {
			st.State = svc.Running
		}
		if s.accepts {
			st.Accepts = svc.AcceptStop | svc.AcceptShutdown | svc.AcceptParamChange
		}
		status <- st
	}
	h.err = superviseService(requests, report, h.serve)
	if h.err != nil {
		// The service manager shows a service-specific exit code; the
		// reason is in the log.
		return true, 1
	}
	return false, 0
}

// serviceCommand installs or uninstalls the Windows service.
func serviceCommand(action, configPath string, stdout io.Writer) error {
	switch action {
	case "install":
		return installService(configPath, stdout)
	case "uninstall":
		return uninstallService(stdout)
	}
	return fmt.Errorf("-service %q: want install or uninstall", action)
}

// installService registers pop3proxy with the service manager: started at
// boot, as LOCAL SERVICE (no rights beyond those of a user; pop3proxy needs
// none to bind port 110 on Windows), restarted after a crash, with this
// executable and configuration. The configuration is checked first, so
// that a service that cannot start is not installed.
func installService(configPath string, stdout io.Writer) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	config, err := filepath.Abs(configPath)
	if err != nil {
		return err
	}
	if _, err := LoadConfig(config); err != nil {
		return err
	}
	m, err := mgr.Connect()
	if err != nil {
		return fmt.Errorf("connecting to the service manager (run as Administrator): %w", err)
	}
	defer m.Disconnect()
	if s, err := m.OpenService(serviceName); err == nil {
		s.Close()
		return fmt.Errorf("service %s already exists; -service uninstall removes it", serviceName)
	}
	s, err := m.CreateService(serviceName, exe, mgr.Config{
		DisplayName:      "pop3proxy",
		Description:      "Filtering POP3 proxy (" + config + ")",
		StartType:        mgr.StartAutomatic,
		ServiceStartName: `NT AUTHORITY\LocalService`,
	}, "-config", config)
	if err != nil {
		return err
	}
	defer s.Close()
	// Restart 5 s after a failure, as systemd's Restart=on-failure; the
	// failure count is reset after a day.
	if err := s.SetRecoveryActions([]mgr.RecoveryAction{
		{Type: mgr.ServiceRestart, Delay: 5 * time.Second},
		{Type: mgr.ServiceRestart, Delay: 5 * time.Second},
		{Type: mgr.ServiceRestart, Delay: time.Minute},
	}, uint32((24 * time.Hour).Seconds())); err != nil {
		return errors.Join(fmt.Errorf("setting recovery actions: %w", err), s.Delete())
	}
	fmt.Fprintf(stdout, "installed service %s: %s -config %s\nlog: %s\nstart it with: sc.exe start %s\n",
		serviceName, exe, config, filepath.Join(filepath.Dir(config), serviceLogName), serviceName)
	return nil
}

// uninstallService removes the service. One that runs is only marked for
// deletion, and goes once it has stopped.
func uninstallService(stdout io.Writer) error {
	m, err := mgr.Connect()
	if err != nil {
		return fmt.Errorf("connecting to the service manager (run as Administrator): %w", err)
	}
	defer m.Disconnect()
	s, err := m.OpenService(serviceName)
	if err != nil {
		return fmt.Errorf("service %s is not installed: %w", serviceName, err)
	}
	defer s.Close()
	if err := s.Delete(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "removed service %s (stop it first with sc.exe stop %s if it runs)\n", serviceName, serviceName)
	return nil
}
