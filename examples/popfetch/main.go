// Command popfetch is a minimal POP3 client, built on the proxy's own
// upstream package, for trying pop3proxy on a machine without a mail client.
// It lists a maildrop and prints messages; it never deletes anything.
//
//	go run ./examples/popfetch -server 127.0.0.1:1110 -user 'demo%127.0.0.1:2110' -password demo
//	go run ./examples/popfetch -server 127.0.0.1:1110 -user 'demo%127.0.0.1:2110' -password demo -retr 1
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/pop3proxy/pop3proxy/upstream"
)

func main() {
	server := flag.String("server", "127.0.0.1:1110", "POP3 server (host:port), plain POP3")
	user := flag.String("user", "", "login, e.g. demo%127.0.0.1:2110 for the proxy")
	password := flag.String("password", "", "password")
	retr := flag.Int("retr", 0, "print message N (0: list the maildrop)")
	top := flag.Int("top", -1, "with -retr N: print only the header and this many body lines (TOP)")
	flag.Parse()
	if *user == "" {
		fmt.Fprintln(os.Stderr, "popfetch: -user is required")
		os.Exit(2)
	}
	if err := fetch(*server, *user, *password, *retr, *top, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "popfetch:", err)
		os.Exit(1)
	}
}

func fetch(server, user, password string, retr, top int, out io.Writer) (err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := upstream.Dial(ctx, server, "", upstream.Options{TLS: upstream.TLSNone})
	if err != nil {
		return err
	}
	defer c.Abort()
	if err := c.Login(user, password); err != nil {
		return err
	}
	if retr > 0 {
		var m *upstream.Message
		if top >= 0 {
			m, err = c.Top(retr, top)
		} else {
			m, err = c.Retr(retr)
		}
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, m); err != nil {
			return err
		}
		m.Close()
	} else {
		if err := list(c, out); err != nil {
			return err
		}
	}
	// QUIT without DELE commits nothing; it just ends the session politely.
	return c.Quit()
}

func list(c *upstream.Client, out io.Writer) error {
	n, size, err := c.Stat()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%d messages, %d octets\n", n, size)
	msgs, err := c.List(0)
	if err != nil {
		return err
	}
	// UIDL is optional (RFC 1939 §7): a -ERR just means no unique-ids.
	uids := map[int]string{}
	ul, err := c.Uidl(0)
	var se *upstream.ServerError
	if err != nil && !errors.As(err, &se) {
		return err
	}
	for _, u := range ul {
		uids[u.Number] = u.UID
	}
	for _, m := range msgs {
		fmt.Fprintf(out, "%4d %10d  %s\n", m.Number, m.Size, uids[m.Number])
	}
	return nil
}
