package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// sampleMessages are what -init puts into an empty Maildir. They are stored
// with Unix line endings, as local delivery agents write them, so a client
// sees the server convert them to CRLF.
var sampleMessages = []string{
	`From: Maildir Example <example@localhost>
To: demo@localhost
Subject: Welcome to the pop3proxy Maildir example
Date: Mon, 01 Jan 2024 09:00:00 +0000
Message-ID: <welcome.1@pop3proxy.example>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Hello!

This message was served by examples/maildir, a POP3 server built on the
pop3proxy framework. Delete it with DELE and QUIT, or keep it: a connection
that closes without QUIT never deletes anything.

Grüße
`,
	`From: Maildir Example <example@localhost>
To: demo@localhost
Subject: Lines that begin with a dot
Date: Mon, 01 Jan 2024 09:01:00 +0000
Message-ID: <dots.2@pop3proxy.example>

The next lines begin with dots. On the wire each gets one more dot
(RFC 1939 byte-stuffing), which the client removes again:
.
.one dot
..two dots
...three dots
The lone dot above would end the message early if the server forgot the
stuffing.
`,
	`From: Maildir Example <example@localhost>
To: demo@localhost
Subject: A message with an attachment
Date: Mon, 01 Jan 2024 09:02:00 +0000
Message-ID: <attachment.3@pop3proxy.example>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="=-example-boundary-="

This is a multi-part message in MIME format.

--=-example-boundary-=
Content-Type: text/plain; charset=us-ascii

The attached file is a short text file.

--=-example-boundary-=
Content-Type: text/plain; charset=us-ascii; name="hello.txt"
Content-Disposition: attachment; filename="hello.txt"
Content-Transfer-Encoding: base64

SGVsbG8gZnJvbSB0aGUgYXR0YWNobWVudCEK

--=-example-boundary-=--
`,
}

// initMaildir creates dir as a Maildir if needed, and fills it with the
// sample messages if it holds no mail. It reports how many it delivered.
func initMaildir(dir string) (int, error) {
	for _, sub := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return 0, err
		}
	}
	for _, sub := range []string{"cur", "new"} {
		des, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil {
			return 0, err
		}
		for _, de := range des {
			if !strings.HasPrefix(de.Name(), ".") {
				return 0, nil // not empty: leave the user's mail alone
			}
		}
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	// Maildir forbids '/' and ':' in the host part.
	host = strings.NewReplacer("/", `\057`, ":", `\072`).Replace(host)
	now := time.Now()
	for i, msg := range sampleMessages {
		// The "M<microseconds>" part orders messages delivered within the
		// same second: i keeps the samples in their order.
		name := fmt.Sprintf("%d.M%06dP%dQ%d.%s", now.Unix(), i, os.Getpid(), i+1, host)
		if err := deliver(dir, name, []byte(msg)); err != nil {
			return i, err
		}
	}
	return len(sampleMessages), nil
}

// deliver writes a message to tmp/ and renames it into new/, so a reader
// never sees a partial file (the Maildir delivery protocol).
func deliver(dir, name string, msg []byte) error {
	tmp := filepath.Join(dir, "tmp", name)
	if err := os.WriteFile(tmp, msg, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, "new", name))
}
