//go:build unix

package exec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	osexec "os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/pop3proxy/pop3proxy/filter"
	"github.com/pop3proxy/pop3proxy/yamlconf"
)

func init() {
	filter.Register(filter.PluginInfo{Type: "exec", New: func() filter.Plugin { return new(Filter) }})
}

const (
	// DefaultMaxOutput is max_output's default: well above the proxy's
	// max_size, so that only a runaway program hits it.
	DefaultMaxOutput = 64 << 20

	// execMaxStderr is how much stderr is kept for the log; the rest is
	// read and dropped, so the program never blocks on a full pipe.
	execMaxStderr = 4 << 10

	// execErrorStderr is how much of stderr goes into the error.
	execErrorStderr = 200

	// execWaitDelay is how long Modify waits for the output pipes to close
	// after the program ended: a process it started in the background, or
	// one that left the process group, may hold them open for ever.
	execWaitDelay = time.Second

	execDefaultPath = "/usr/local/bin:/usr/bin:/bin"
)

// Filter is the "exec" filter: it runs a program that gets the message on
// stdin and writes the message to deliver on stdout.
//
//	filters:
//	- type: exec
//	  command: ["/usr/local/bin/myfilter", "--flag"]
//	  timeout: 30s          # the chain's key: the program is killed then
//	  max_output: 64MiB     # bound on stdout (the default)
//	  env: {MYFILTER_CONF: /etc/myfilter.conf}
//
// command[0] is an absolute path or a name looked up in PATH at start. The
// program runs without a shell, in a process group of its own that is
// killed at the timeout and when the program exits, so nothing it starts
// outlives it. Its environment is not the proxy's, which may hold secrets:
// it is PATH, HOME and TMPDIR as the proxy has them (PATH defaults to
// /usr/local/bin:/usr/bin:/bin), LANG=C (byte semantics for 8-bit mail),
// the env entries (which may override those, not the POP3PROXY_ ones), and:
//
//	POP3PROXY_FILTER          the filter's name in the configuration
//	POP3PROXY_USER            the user name at the upstream server
//	POP3PROXY_UPSTREAM        the upstream server, host:port
//	POP3PROXY_MESSAGE_NUMBER  the message number in the POP3 session
//
// Exit status 0 delivers stdout as written, except that a bare LF becomes
// CRLF. Everything else is an error, to which on_error applies: a non-zero
// exit or a signal, the timeout, empty output, output that does not start
// with a header field or exceeds max_output, and output pipes a leftover
// process kept open after the program exited. The first 4 KiB of stderr
// go to the log, never to the client.
type Filter struct {
	Command   []string          `yaml:"command"`
	MaxOutput yamlconf.ByteSize `yaml:"max_output"`
	Env       map[string]string `yaml:"env"`

	path string
	env  []string // without the per-message variables
	name string
	log  *zap.Logger
}

// Provision resolves the program, so that a typo stops the proxy at start.
func (e *Filter) Provision(env filter.Env) error {
	e.name, e.log = env.Name, env.Logger
	if e.log == nil {
		e.log = zap.NewNop()
	}
	if len(e.Command) == 0 || e.Command[0] == "" {
		return errors.New(`command is empty: give the program and its arguments as a list, e.g. ["/usr/local/bin/myfilter", "--flag"]`)
	}
	for i, arg := range e.Command {
		if strings.IndexByte(arg, 0) >= 0 {
			return fmt.Errorf("command[%d] contains a NUL byte", i)
		}
	}
	prog := e.Command[0]
	// A relative path would depend on the proxy's working directory.
	if strings.ContainsRune(prog, '/') && !filepath.IsAbs(prog) {
		return fmt.Errorf("command %q: use an absolute path, or a bare name found in PATH", prog)
	}
	path, err := osexec.LookPath(prog)
	if err != nil {
		return fmt.Errorf("command %q: %w", prog, err)
	}
	if e.path, err = filepath.Abs(path); err != nil {
		return fmt.Errorf("command %q: %w", prog, err)
	}

	if e.MaxOutput == 0 {
		e.MaxOutput = DefaultMaxOutput
	}
	e.env = e.env[:0]
	for _, v := range []string{"PATH", "HOME", "TMPDIR"} {
		if val := os.Getenv(v); val != "" {
			e.env = append(e.env, v+"="+val)
		} else if v == "PATH" {
			e.env = append(e.env, "PATH="+execDefaultPath)
		}
	}
	e.env = append(e.env, "LANG=C")
	names := make([]string, 0, len(e.Env))
	for name := range e.Env {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if err := checkEnv(name, e.Env[name]); err != nil {
			return err
		}
		// os/exec keeps the last of duplicate keys.
		e.env = append(e.env, name+"="+e.Env[name])
	}

	e.log.Info("exec filter ready", zap.String("program", e.path), zap.Strings("args", e.Command[1:]),
		zap.Int64("max_output", int64(e.MaxOutput)))
	return nil
}

func checkEnv(name, value string) error {
	if name == "" {
		return errors.New("env: empty variable name")
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c == '_' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || i > 0 && '0' <= c && c <= '9') {
			return fmt.Errorf("env: %q is not a variable name (letters, digits, underscores)", name)
		}
	}
	if strings.HasPrefix(strings.ToUpper(name), "POP3PROXY_") {
		return fmt.Errorf("env: %s: the POP3PROXY_ variables are set by the proxy", name)
	}
	if strings.IndexByte(value, 0) >= 0 {
		return fmt.Errorf("env: %s: value contains a NUL byte", name)
	}
	return nil
}

func (e *Filter) Modify(ctx context.Context, m *filter.Message) ([]byte, error) {
	cmd := osexec.CommandContext(ctx, e.path, e.Command[1:]...)
	cmd.Env = append(slices.Clip(e.env),
		"POP3PROXY_FILTER="+e.name,
		"POP3PROXY_USER="+envValue(m.Meta.User),
		"POP3PROXY_UPSTREAM="+envValue(m.Meta.Upstream),
		"POP3PROXY_MESSAGE_NUMBER="+strconv.Itoa(m.Meta.Number),
	)
	// os/exec ignores EPIPE on stdin: a program that does not read it
	// all is judged by its exit status.
	cmd.Stdin = bytes.NewReader(m.Bytes())
	stdout := &outputBuffer{max: int(e.MaxOutput)}
	// Most filters write about what they read.
	stdout.b.Grow(min(m.Len()+4096, stdout.max))
	stderr := &stderrLog{}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	// The timeout must kill a shell script's children too: a survivor
	// would keep stdout open.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return killGroup(cmd.Process.Pid) }
	cmd.WaitDelay = execWaitDelay

	start := time.Now()
	err := cmd.Run()
	if cmd.Process != nil {
		// Kill what the program left running. Linux does not reuse the
		// reaped leader's PID while its group has members; with none left
		// this finds nothing (barring a PID wrap-around in microseconds).
		_ = killGroup(cmd.Process.Pid)
	}
	elapsed := time.Since(start)

	fail := func(err error) error {
		if len(stderr.b) > execErrorStderr {
			e.log.Warn("exec program stderr", zap.Int("msg", m.Meta.Number), zap.ByteString("stderr", stderr.b),
				zap.Int("stderr_dropped", stderr.dropped))
		}
		if s := stderr.snippet(); s != "" {
			return fmt.Errorf("%s: %w; stderr: %q", e.path, err, s)
		}
		return fmt.Errorf("%s: %w", e.path, err)
	}
	switch {
	case stdout.over:
		return nil, fail(fmt.Errorf("output exceeds max_output (%d bytes)", e.MaxOutput))
	case err != nil && ctx.Err() != nil:
		return nil, fail(fmt.Errorf("killed after %v: %w", elapsed.Round(time.Millisecond), context.Cause(ctx)))
	case errors.Is(err, osexec.ErrWaitDelay):
		return nil, fail(fmt.Errorf("exited, but a process it started still held its output open %v later; the output may be incomplete", execWaitDelay))
	case err != nil:
		return nil, fail(err)
	}

	out := stdout.b.Bytes()
	if len(out) == 0 {
		return nil, fail(errors.New("exit status 0 but no message on stdout"))
	}
	out = toCRLF(out)
	if !startsWithField(out) {
		line, _, _ := bytes.Cut(out, []byte("\r\n"))
		return nil, fail(fmt.Errorf("output does not start with a header field: %.60q", line))
	}
	if len(stderr.b) > 0 {
		e.log.Info("exec program wrote to stderr", zap.Int("msg", m.Meta.Number), zap.ByteString("stderr", stderr.b),
			zap.Int("stderr_dropped", stderr.dropped))
	}
	e.log.Debug("exec program done", zap.Int("msg", m.Meta.Number), zap.Duration("took", elapsed),
		zap.Int("in", m.Len()), zap.Int("out", len(out)))
	if bytes.Equal(out, m.Bytes()) {
		return nil, nil
	}
	return out, nil
}

func killGroup(pid int) error {
	err := syscall.Kill(-pid, syscall.SIGKILL)
	if errors.Is(err, syscall.ESRCH) {
		return os.ErrProcessDone
	}
	return err
}

// envValue drops NUL bytes, which an environment cannot hold; the session
// refuses them in user names already.
func envValue(s string) string { return strings.ReplaceAll(s, "\x00", "") }

// toCRLF turns every LF not preceded by CR into CRLF; a bare CR stays.
func toCRLF(b []byte) []byte {
	bare := 0
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			bare++
		}
	}
	if bare == 0 {
		return b
	}
	out := make([]byte, 0, len(b)+bare)
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, c)
	}
	return out
}

// startsWithField reports whether the first line is a header field (white
// space before the colon allowed, RFC 5322 §4.5). Every message starts so
// (RFC 5322 §3.6), and the proxy relies on it: the slow-scan keepalive
// sends header lines first (docs/clients.md, Outlook).
func startsWithField(b []byte) bool {
	line, _, _ := bytes.Cut(b, []byte("\r\n"))
	name, _, ok := bytes.Cut(line, []byte(":"))
	if !ok {
		return false
	}
	name = bytes.TrimRight(name, " \t")
	return len(name) > 0 && filter.CheckFieldName(string(name)) == nil
}

// outputBuffer collects stdout up to max bytes. Past that it fails the
// write, so os/exec closes the pipe and a runaway program dies of SIGPIPE
// instead of running until the timeout.
type outputBuffer struct {
	b    bytes.Buffer
	max  int
	over bool
}

var errExecOutputTooLarge = errors.New("output exceeds max_output")

func (o *outputBuffer) Write(p []byte) (int, error) {
	if o.b.Len()+len(p) > o.max {
		o.over = true
		return 0, errExecOutputTooLarge
	}
	return o.b.Write(p)
}

type stderrLog struct {
	b       []byte
	dropped int
}

func (s *stderrLog) Write(p []byte) (int, error) {
	keep := min(len(p), execMaxStderr-len(s.b))
	s.b = append(s.b, p[:keep]...)
	s.dropped += len(p) - keep
	return len(p), nil
}

func (s *stderrLog) snippet() string {
	b := bytes.TrimSpace(s.b)
	if len(b) > execErrorStderr {
		b = b[:execErrorStderr]
	}
	return string(b)
}

var (
	_ filter.Modifier    = (*Filter)(nil)
	_ filter.Provisioner = (*Filter)(nil)
)
