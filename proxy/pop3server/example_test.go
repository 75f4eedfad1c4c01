package pop3server_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"strings"

	"github.com/pop3proxy/pop3proxy/proxy/pop3server"
)

// memMailbox is a maildrop held in memory.
type memMailbox struct{ msgs []string }

func (m *memMailbox) Messages() []pop3server.MessageInfo {
	list := make([]pop3server.MessageInfo, len(m.msgs))
	for i, msg := range m.msgs {
		list[i] = pop3server.MessageInfo{Size: int64(len(msg)), UID: fmt.Sprintf("msg-%d", i+1)}
	}
	return list
}

func (m *memMailbox) Open(n int) (io.ReadCloser, error) {
	return io.NopCloser(strings.NewReader(m.msgs[n-1])), nil
}

func (m *memMailbox) Delete(numbers []int) error {
	fmt.Println("deleting", numbers)
	return nil
}

func (m *memMailbox) Close() error { return nil }

// Example serves an in-memory maildrop and talks to it as a client would.
func Example() {
	backend := pop3server.BackendFunc(func(ctx context.Context, c *pop3server.ConnInfo, user, pass string) (pop3server.Session, error) {
		if user != "alice" || pass != "secret" {
			return nil, pop3server.ErrAuthFailed
		}
		return pop3server.NewMailboxSession(&memMailbox{msgs: []string{
			"Subject: hello\r\n\r\nHi Alice!\r\n",
			"Subject: dots\r\n\r\n.leading dot\r\n",
		}}), nil
	})
	srv, err := pop3server.NewServer(pop3server.Options{Backend: backend, Greeting: "example POP3 server ready"})
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Shutdown(context.Background())

	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	// exchange sends cmd (if any) and prints the response, up to the "."
	// of a multi-line one.
	exchange := func(cmd string, multiline bool) {
		if cmd != "" {
			fmt.Println("C:", cmd)
			fmt.Fprintf(conn, "%s\r\n", cmd)
		}
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				log.Fatal(err)
			}
			line = strings.TrimRight(line, "\r\n")
			fmt.Println(strings.TrimSpace("S: " + line))
			if !multiline || line == "." || strings.HasPrefix(line, "-ERR") {
				return
			}
		}
	}
	exchange("", false)
	exchange("USER alice", false)
	exchange("PASS secret", false)
	exchange("STAT", false)
	exchange("UIDL", true)
	exchange("RETR 2", true)
	exchange("DELE 1", false)
	exchange("LIST", true)
	exchange("QUIT", false)

	// Output:
	// S: +OK example POP3 server ready
	// C: USER alice
	// S: +OK send PASS
	// C: PASS secret
	// S: +OK maildrop locked and ready
	// C: STAT
	// S: +OK 2 60
	// C: UIDL
	// S: +OK unique-id listing follows
	// S: 1 msg-1
	// S: 2 msg-2
	// S: .
	// C: RETR 2
	// S: +OK 31 octets
	// S: Subject: dots
	// S:
	// S: ..leading dot
	// S: .
	// C: DELE 1
	// S: +OK message deleted
	// C: LIST
	// S: +OK scan listing follows
	// S: 2 31
	// S: .
	// C: QUIT
	// deleting [1]
	// S: +OK POP3 server signing off
}
