package rspamd

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/pop3proxy/pop3proxy/filter"
	"github.com/pop3proxy/pop3proxy/scanners/internal/daemon"
)

const (
	// maxReply is far above a real /checkv2 reply: 0.3 KiB for GTUBE,
	// 2 to 8 KiB with symbol descriptions and milter header fields.
	maxReply = 1 << 20
	maxPong  = 64

	dialTimeout = 5 * time.Second
	tlsTimeout  = 5 * time.Second
	// responseHeaderTimeout backs up the context's deadline, which is the
	// filter's timeout; rspamd itself answers within its task_timeout (8 s).
	responseHeaderTimeout = 2 * time.Minute
	// idleTimeout is below common reverse proxies' keep-alive (nginx: 75 s),
	// so a pooled connection is rarely one the server has just closed.
	idleTimeout = 30 * time.Second
	maxIdle     = 16

	userAgent = "pop3proxy"
)

// client is safe for concurrent use.
type client struct {
	base      string // for error messages: scheme://host:port[/path]
	checkURL  string
	pingURL   string
	password  string
	http      *http.Client
	transport *http.Transport
}

func newClient(base *url.URL, password string) *client {
	tr := &http.Transport{
		// rspamd is the proxy's own infrastructure: HTTP_PROXY and
		// friends are for the user's web traffic, not for it.
		Proxy: nil,
		DialContext: (&net.Dialer{
			Timeout:   dialTimeout,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		TLSClientConfig:        &tls.Config{MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:    tlsTimeout,
		ResponseHeaderTimeout:  responseHeaderTimeout,
		MaxResponseHeaderBytes: 64 << 10,
		MaxIdleConns:           maxIdle,
		MaxIdleConnsPerHost:    maxIdle,
		IdleConnTimeout:        idleTimeout,
		// No Accept-Encoding: rspamd's reply is small, and an encoded one
		// would be a decompression the size bound does not see.
		DisableCompression: true,
	}
	b := base.String()
	return &client{
		base:      b,
		checkURL:  b + "/checkv2",
		pingURL:   b + "/ping",
		password:  password,
		transport: tr,
		http: &http.Client{
			Transport: tr,
			// A redirect is a misconfigured address, and following it
			// would send the message (and the password) elsewhere.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

type envelope struct {
	from      string   // the From header: an address, "<>", or "" for none
	rcpts     []string // one Rcpt header each
	deliverTo string   // the Deliver-To header, "" for none
}

type reply struct {
	Action   string // normalised: "add header"
	Score    float64
	Required float64
	Symbols  []symbol
	Milter   json.RawMessage // the "milter" block, read by milterEdits
}

type symbol struct {
	Name  string
	Score float64
}

// wireReply's pointers tell a missing key from a zero.
type wireReply struct {
	Action        *string               `json:"action"`
	Score         *float64              `json:"score"`
	RequiredScore *float64              `json:"required_score"`
	Symbols       map[string]wireSymbol `json:"symbols"`
	Milter        json.RawMessage       `json:"milter"`
}

type wireSymbol struct {
	Score float64 `json:"score"`
}

type statusError struct {
	Status string // "401 Unauthorized"
	Text   string // rspamd's {"error": ...}, or the start of the body
}

func (e *statusError) Error() string {
	msg := "rspamd answered " + e.Status
	if e.Text != "" {
		msg += ": " + daemon.Quote(e.Text)
	}
	return msg
}

// check posts the message, streamed, with its exact size as Content-Length.
func (c *client) check(ctx context.Context, m *filter.Message, env envelope) (reply, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, filter.DefaultTimeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.checkURL, nil)
	if err != nil {
		return reply{}, fmt.Errorf("rspamd %s: %w", c.base, err)
	}
	src := &messageSource{m: m}
	req.ContentLength = m.Size()
	if m.Size() > 0 {
		req.Body, _ = src.open()
		// Lets the transport resend on a fresh connection when a pooled
		// one turns out closed before anything was written.
		req.GetBody = src.open
	} else {
		req.Body = http.NoBody // a nil length with a body would be chunked
	}
	c.setHeaders(req)
	if env.deliverTo != "" {
		req.Header.Set("Deliver-To", env.deliverTo)
	}
	if env.from != "" {
		req.Header.Set("From", env.from)
	}
	for _, r := range env.rcpts {
		req.Header.Add("Rcpt", r)
	}

	// A failed read of the message is checked before and after the reply
	// (the transport may still be sending when it comes): rspamd then got
	// fewer bytes than Content-Length said, and no reply is about it.
	readFailed := func() error {
		if rerr := src.failure(); rerr != nil {
			return fmt.Errorf("rspamd %s: %w", c.base, &daemon.ReadError{Err: rerr})
		}
		return nil
	}
	resp, err := c.http.Do(req)
	if rerr := readFailed(); rerr != nil {
		if resp != nil {
			resp.Body.Close()
		}
		return reply{}, rerr
	}
	if err != nil {
		return reply{}, c.fail(ctx, "POST /checkv2", err)
	}
	defer resp.Body.Close()
	body, err := readBounded(resp.Body, maxReply)
	if rerr := readFailed(); rerr != nil {
		return reply{}, rerr
	}
	if err != nil {
		return reply{}, c.fail(ctx, "reading the reply to /checkv2", err)
	}
	if resp.StatusCode != http.StatusOK {
		return reply{}, fmt.Errorf("rspamd %s: POST /checkv2: %w", c.base, newStatusError(resp, body))
	}
	rep, err := parseReply(body)
	if err != nil {
		return reply{}, fmt.Errorf("rspamd %s: %w", c.base, err)
	}
	return rep, nil
}

// ping's errors leave rspamd's address to filter.PingError.
func (c *client) ping(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, filter.DefaultTimeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.pingURL, nil)
	if err != nil {
		return err
	}
	c.setHeaders(req)
	resp, err := c.http.Do(req)
	if err != nil {
		return withContext(ctx, "GET /ping", err)
	}
	defer resp.Body.Close()
	body, err := readBounded(resp.Body, maxPong)
	if err != nil {
		return withContext(ctx, "reading the reply to /ping", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /ping: %w", newStatusError(resp, body))
	}
	if string(bytes.TrimSpace(body)) != "pong" {
		return fmt.Errorf("GET /ping answered %s, not pong", daemon.Quote(string(body)))
	}
	return nil
}

func (c *client) setHeaders(req *http.Request) {
	req.Header.Set("User-Agent", userAgent)
	if c.password != "" {
		req.Header.Set("Password", c.password)
	}
}

func (c *client) fail(ctx context.Context, op string, err error) error {
	return fmt.Errorf("rspamd %s: %w", c.base, withContext(ctx, op, err))
}

// withContext wraps the context's error when it caused err, so that the
// chain reports a timeout as "timed out".
func withContext(ctx context.Context, op string, err error) error {
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("%s: %w (%v)", op, cerr, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// readBounded reads r to its end, failing beyond max bytes.
func readBounded(r io.Reader, max int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("reply larger than %d bytes", max)
	}
	return b, nil
}

func newStatusError(resp *http.Response, body []byte) *statusError {
	e := &statusError{Status: resp.Status}
	var j struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &j) == nil && j.Error != "" {
		e.Text = j.Error
	} else {
		e.Text = string(bytes.TrimSpace(body))
	}
	return e
}

func parseReply(body []byte) (reply, error) {
	var w wireReply
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&w); err != nil {
		return reply{}, fmt.Errorf("reply is not the JSON of /checkv2: %v (%s)", err, daemon.Quote(string(body)))
	}
	if _, err := dec.Token(); err != io.EOF {
		return reply{}, fmt.Errorf("reply has more after its JSON object (%s)", daemon.Quote(string(body)))
	}
	switch {
	case w.Action == nil:
		return reply{}, fmt.Errorf("reply has no action (%s)", daemon.Quote(string(body)))
	case w.Score == nil:
		return reply{}, fmt.Errorf("reply has no score (%s)", daemon.Quote(string(body)))
	case w.RequiredScore == nil:
		return reply{}, fmt.Errorf("reply has no required_score (%s)", daemon.Quote(string(body)))
	}
	rep := reply{Action: normaliseAction(*w.Action), Score: *w.Score, Required: *w.RequiredScore}
	for name, s := range w.Symbols {
		rep.Symbols = append(rep.Symbols, symbol{Name: name, Score: s.Score})
	}
	rep.Milter = w.Milter
	return rep, nil
}

// messageSource remembers the first error reading the message, which the
// transport reports only as a failed request.
type messageSource struct {
	m   *filter.Message
	mu  sync.Mutex
	err error
}

func (s *messageSource) open() (io.ReadCloser, error) {
	return io.NopCloser(&sourceReader{r: s.m.Open(), s: s}), nil
}

func (s *messageSource) failure() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

type sourceReader struct {
	r io.Reader
	s *messageSource
}

func (r *sourceReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		r.s.mu.Lock()
		if r.s.err == nil {
			r.s.err = err
		}
		r.s.mu.Unlock()
	}
	return n, err
}
