// Command maildir is a small POP3 server that serves one local Maildir with
// the pop3proxy server framework (package pop3server). It shows the framework
// working end to end without a mail server of your own:
//
//	go run ./examples/maildir -maildir /tmp/demo-maildir -init
//	curl pop3://127.0.0.1:2110/ -u demo:demo      # LIST
//	curl pop3://127.0.0.1:2110/1 -u demo:demo     # RETR 1
//
// -init creates the Maildir and three sample messages if it holds no mail.
// One user (-user, -password; default demo/demo) may log in with USER/PASS
// or APOP. A second session on the same Maildir is refused with
// "-ERR [IN-USE]". Messages stored with bare LF line endings are served with
// CRLF and listed with the matching sizes (RFC 1939 §11). Deleted messages
// are removed from disk on QUIT, and only then.
//
// It is an example: plaintext only, one user, Unix only (the maildrop lock
// is an flock). SIGINT or SIGTERM shuts it down gracefully: sessions in
// progress get up to 10 s to finish.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/pop3proxy/pop3proxy/proxy/pop3server"
)

// shutdownTimeout bounds the graceful shutdown: sessions still open after
// it are closed without committing their deletions.
const shutdownTimeout = 10 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr, nil); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "maildir:", err)
		}
		os.Exit(2)
	}
}

// run parses args, serves until ctx ends, then shuts down. ready, if not
// nil, receives the listening address (tests listen on port 0).
func run(ctx context.Context, args []string, stderr io.Writer, ready chan<- net.Addr) error {
	fs := flag.NewFlagSet("maildir", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:2110", "address to listen on")
	dir := fs.String("maildir", "", "Maildir to serve, containing cur/, new/ and tmp/ (required)")
	user := fs.String("user", "demo", "user name")
	password := fs.String("password", "demo", "password, also the APOP secret")
	initDir := fs.Bool("init", false, "create the Maildir and three sample messages if it holds no mail")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: maildir -maildir DIR [-init] [-listen ADDR] [-user NAME -password PW]\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *dir == "" {
		fs.Usage()
		return errors.New("-maildir is required")
	}
	if *user == "" || *password == "" {
		return errors.New("-user and -password must not be empty")
	}

	// zap's development console logger, writing to stderr (tests pass
	// their own writer).
	log := zap.New(zapcore.NewCore(
		zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()),
		zapcore.Lock(zapcore.AddSync(stderr)),
		zapcore.DebugLevel,
	), zap.Development(), zap.AddCaller())
	defer log.Sync()

	if *initDir {
		n, err := initMaildir(*dir)
		if err != nil {
			return fmt.Errorf("-init: %w", err)
		}
		if n > 0 {
			log.Info("created sample messages", zap.String("maildir", *dir), zap.Int("count", n))
		}
	}
	if err := checkMaildir(*dir); err != nil {
		return err
	}

	srv, err := pop3server.NewServer(pop3server.Options{
		Backend:  &backend{dir: *dir, user: *user, password: *password},
		Logger:   log,
		Greeting: "pop3proxy Maildir example ready",
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	log.Info("serving", zap.String("maildir", *dir), zap.Stringer("listen", ln.Addr()),
		zap.String("try", fmt.Sprintf("curl pop3://%s/1 -u %s:PASSWORD", ln.Addr(), *user)))
	if ready != nil {
		ready <- ln.Addr()
	}

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}

	log.Info("shutting down", zap.Duration("timeout", shutdownTimeout))
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("sessions still open at the deadline were closed without QUIT", zap.Error(err))
	}
	if err := <-served; !errors.Is(err, pop3server.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}
