package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// probeUsage is the help text of the -probe flag.
const probeUsage = "GET this health `URL` (e.g. http://127.0.0.1:9110/healthz, metrics.listen), exit 0 on a 2xx answer and 1 otherwise, without reading the configuration: a container HEALTHCHECK for images without a shell or curl"

// probeTimeout bounds the whole probe. A container engine kills a health
// check that outlives its own timeout (Docker's default is 30s) and counts
// that as a failure anyway; answering on our own gives a reason instead.
const probeTimeout = 5 * time.Second

// runProbe is what `pop3proxy -probe URL` does: GET rawURL and return the
// exit status, 0 for a 2xx answer and 1 for anything else, with the reason
// on stderr (Docker keeps a health check's output in `docker inspect`).
// It reads no configuration file, so it works with whatever configuration
// the serving process was started with.
func runProbe(rawURL string, stdout, stderr io.Writer) int {
	status, err := probe(context.Background(), rawURL, probeTimeout)
	if err != nil {
		fmt.Fprintln(stderr, "pop3proxy: probe:", err)
		return 1
	}
	fmt.Fprintln(stdout, status)
	return 0
}

// probe GETs rawURL and returns the response's status line when it is
// 2xx. Redirects are not followed: a health endpoint that redirects is
// misconfigured, and following one could leave the host being checked.
func probe(ctx context.Context, rawURL string, timeout time.Duration) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("%q: want an http:// or https:// URL with a host, such as http://127.0.0.1:9110/healthz", rawURL)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", err
	}
	client := &http.Client{
		// The environment's HTTP_PROXY must not route a local health
		// check through a proxy server.
		Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is already in the message's context
		}
		return "", fmt.Errorf("GET %s: %w", u.Redacted(), err)
	}
	defer resp.Body.Close()
	// Read a little of the body for the message, and no more: the
	// endpoint may be anything.
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return "", fmt.Errorf("GET %s: %s: %q", u.Redacted(), resp.Status, body)
	}
	return resp.Status, nil
}
