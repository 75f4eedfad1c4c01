//go:build unix

package exec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
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
	filter.Register(filter.PluginInfo{Type: "exec", New: func() filter.Plugin { return new(Filter) }, MaxConcurrent: DefaultMaxConcurrent})
}

const (
	// DefaultMaxConcurrent is max_concurrent's default: each message costs a
	// process, and nothing else bounds how many sessions fork at once; four
	// keep a small server responsive while messages wait (within the timeout).
	DefaultMaxConcurrent = 4

	DefaultMaxOutput = 64 << 20 // max_output's default: well above max_size, so only a runaway hits it

	execMaxStderr = 4 << 10 // kept for the log; the rest is read and dropped, never blocking the program

	execErrorStderr = 200 // of stderr, into the error

	execWaitDelay = time.Second // a process the program left (or that left its group) may hold the pipes for ever

	execDefaultPath = "/usr/local/bin:/usr/bin:/bin"
)

// Filter runs a program that gets the message on stdin and writes what to deliver on stdout.
//
//	filters:
//	- type: exec
//	  command: ["/usr/local/bin/myfilter", "--flag"]
//	  timeout: 30s          # the chain's key: the program is killed then
//	  max_output: 64MiB     # bound on stdout (the default)
//	  max_concurrent: 4     # the chain's key: programs running at once (the default)
//	  env: {MYFILTER_CONF: /etc/myfilter.conf}
//
// command[0] is an absolute path or a name looked up in PATH at start. It
// runs without a shell, in a process group of its own, killed at the
// timeout and when the program exits, so nothing it starts outlives it.
// Its environment is not the proxy's (which may hold secrets): the proxy's
// PATH (or /usr/local/bin:/usr/bin:/bin), HOME and TMPDIR, LANG=C (byte
// semantics for 8-bit mail), env (which may override those, not the
// POP3PROXY_ ones), and:
//
//	POP3PROXY_FILTER          the filter's name in the configuration
//	POP3PROXY_USER            the user name at the upstream server
//	POP3PROXY_UPSTREAM        the upstream server, host:port
//	POP3PROXY_MESSAGE_NUMBER  the message number in the POP3 session
//
// Exit status 0 with stdout identical to the message leaves it byte for
// byte; other stdout after exit 0 is delivered as written, bare LFs made
// CRLF. Anything else is an error (on_error applies): a non-zero exit or a
// signal, the timeout, empty output, changed output not starting with a
// header field, output over max_output, output pipes a leftover process
// kept open. The first 4 KiB of stderr go to the log, never to the client.
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

// Modify runs the program (see output for how its stdout reaches out).
func (e *Filter) Modify(ctx context.Context, m *filter.Message, out io.Writer) (bool, error) {
	cmd := osexec.CommandContext(ctx, e.path, e.Command[1:]...)
	cmd.Env = append(slices.Clip(e.env),
		"POP3PROXY_FILTER="+e.name,
		"POP3PROXY_USER="+envValue(m.Meta.User),
		"POP3PROXY_UPSTREAM="+envValue(m.Meta.Upstream),
		"POP3PROXY_MESSAGE_NUMBER="+strconv.Itoa(m.Meta.Number),
	)
	// os/exec ignores EPIPE on stdin: a program that reads part is judged by its exit.
	cmd.Stdin = m.Open()
	stdout := newOutput(m, out, int64(e.MaxOutput))
	stderr := &stderrLog{}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	// The timeout kills a shell script's children too, which would hold stdout open.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return killGroup(cmd.Process.Pid) }
	cmd.WaitDelay = execWaitDelay

	start := time.Now()
	err := cmd.Run()
	if cmd.Process != nil {
		// Kill leftovers: Linux does not reuse the reaped leader's PID while its
		// group has members (barring a PID wrap-around in microseconds).
		_ = killGroup(cmd.Process.Pid)
	}
	elapsed := time.Since(start)

	fail := func(err error) error {
		if len(stderr.b) > execErrorStderr {
			e.log.Warn("exec program stderr", append(m.Meta.LogFields(), zap.ByteString("stderr", stderr.b),
				zap.Int("stderr_dropped", stderr.dropped))...)
		}
		if s := stderr.snippet(); s != "" {
			return fmt.Errorf("%s: %w; stderr: %q", e.path, err, s)
		}
		return fmt.Errorf("%s: %w", e.path, err)
	}
	switch {
	case stdout.over:
		return false, fail(fmt.Errorf("output exceeds max_output (%d bytes)", e.MaxOutput))
	case stdout.err != nil:
		// The cause of the program's own failure.
		return false, fail(stdout.err)
	case err != nil && ctx.Err() != nil:
		return false, fail(fmt.Errorf("killed after %v: %w", elapsed.Round(time.Millisecond), context.Cause(ctx)))
	case errors.Is(err, osexec.ErrWaitDelay):
		return false, fail(fmt.Errorf("exited, but a process it started still held its output open %v later; the output may be incomplete", execWaitDelay))
	case err != nil:
		return false, fail(err)
	}

	// Raw output first: cat must not fail on a headerless message nor rewrite bare LFs.
	changed := !stdout.unchanged()
	if changed {
		if stdout.n == 0 {
			return false, fail(errors.New("exit status 0 but no message on stdout"))
		}
		if !startsWithField(stdout.first) {
			return false, fail(fmt.Errorf("output does not start with a header field: %.60q", bytes.TrimSuffix(stdout.first, []byte("\r"))))
		}
		if err := stdout.finish(); err != nil {
			return false, fail(err)
		}
	}
	if len(stderr.b) > 0 {
		e.log.Info("exec program wrote to stderr", zap.Int("msg", m.Meta.Number), zap.ByteString("stderr", stderr.b),
			zap.Int("stderr_dropped", stderr.dropped))
	}
	e.log.Debug("exec program done", zap.Int("msg", m.Meta.Number), zap.Duration("took", elapsed),
		zap.Int64("in", m.Size()), zap.Int64("out", stdout.n), zap.Bool("changed", changed),
		zap.Int64("bare_lf", stdout.bareLF))
	return changed, nil
}

func killGroup(pid int) error {
	err := syscall.Kill(-pid, syscall.SIGKILL)
	if errors.Is(err, syscall.ESRCH) {
		return os.ErrProcessDone
	}
	return err
}

// envValue drops NUL bytes (the session refuses them in user names already).
func envValue(s string) string { return strings.ReplaceAll(s, "\x00", "") }

// startsWithField reports whether the output's first line is a header field
// (RFC 5322 §4.5: white space may precede the colon): every message starts so
// (RFC 5322 §3.6), and the slow-scan keepalive relies on it (docs/clients.md, Outlook).
func startsWithField(line []byte) bool {
	name, _, ok := bytes.Cut(line, []byte(":"))
	if !ok {
		return false
	}
	name = bytes.TrimRight(name, " \t")
	return len(name) > 0 && filter.CheckFieldName(string(name)) == nil
}

const maxFirstLine = 1000 // a line may have 998 octets (RFC 5322 §2.1.1), a field name fewer

// output is the program's stdout, compared on the raw bytes with the message
// at the same offset, so that a pass-through leaves it exactly as it was.
// Nothing goes to out while they are equal; at the first difference the equal
// part is copied from the message, then output streams: an unchanged message
// costs no spool space, a changed one at most its size in flight.
type output struct {
	in  *filter.Message
	out io.Writer
	max int64 // max_output, on the raw bytes

	n      int64 // raw bytes received
	same   bool  // the raw bytes so far are the message's first n
	over   bool  // max_output was exceeded
	err    error // reading the message or writing to out failed
	lastCR bool  // the last raw byte converted was CR
	bareLF int64 // LFs made CRLF

	first     []byte // the start of the first line, for startsWithField
	firstDone bool

	scratch []byte // the message's bytes to compare
	conv    []byte // converted output
}

func newOutput(in *filter.Message, out io.Writer, max int64) *output {
	return &output{in: in, out: out, max: max, same: true, scratch: make([]byte, 32<<10)}
}

var errOutputTooLarge = errors.New("output exceeds max_output")

// Write fails past max_output or when storing fails: SIGPIPE beats the timeout.
func (o *output) Write(p []byte) (int, error) {
	if o.err != nil {
		return 0, o.err
	}
	if o.n+int64(len(p)) > o.max {
		o.over = true
		return 0, errOutputTooLarge
	}
	if !o.firstDone {
		line := p
		if i := bytes.IndexByte(p, '\n'); i >= 0 {
			line, o.firstDone = p[:i], true
		}
		o.first = append(o.first, line[:min(len(line), maxFirstLine-len(o.first))]...)
		o.firstDone = o.firstDone || len(o.first) == maxFirstLine
	}
	if o.same {
		eq, err := o.matches(p)
		if err != nil {
			o.err = err
			return 0, err
		}
		if eq {
			o.n += int64(len(p))
			return len(p), nil
		}
		if err := o.diverge(); err != nil {
			return 0, err
		}
	}
	if err := o.convert(p); err != nil {
		return 0, err
	}
	o.n += int64(len(p))
	return len(p), nil
}

func (o *output) matches(p []byte) (bool, error) {
	if o.n+int64(len(p)) > o.in.Size() {
		return false, nil
	}
	for off := 0; off < len(p); {
		k := min(len(p)-off, len(o.scratch))
		if _, err := o.in.ReadAt(o.scratch[:k], o.n+int64(off)); err != nil {
			return false, fmt.Errorf("reading the message to compare the output with: %w", err)
		}
		if !bytes.Equal(o.scratch[:k], p[off:off+k]) {
			return false, nil
		}
		off += k
	}
	return true, nil
}

// diverge writes the output so far (the message's first n bytes) to out.
func (o *output) diverge() error {
	o.same = false
	for off := int64(0); off < o.n; {
		k := int(min(o.n-off, int64(len(o.scratch))))
		if _, err := o.in.ReadAt(o.scratch[:k], off); err != nil {
			o.err = fmt.Errorf("reading the message to copy the output from: %w", err)
			return o.err
		}
		if err := o.convert(o.scratch[:k]); err != nil {
			return err
		}
		off += int64(k)
	}
	return nil
}

// convert writes p to out, bare LFs made CRLF; a bare CR stays.
func (o *output) convert(p []byte) error {
	if len(p) == 0 {
		return nil
	}
	b := p
	if bytes.IndexByte(p, '\n') >= 0 {
		o.conv = o.conv[:0]
		prevCR := o.lastCR
		for _, c := range p {
			if c == '\n' && !prevCR {
				o.conv = append(o.conv, '\r')
				o.bareLF++
			}
			o.conv = append(o.conv, c)
			prevCR = c == '\r'
		}
		b = o.conv
	}
	o.lastCR = p[len(p)-1] == '\r'
	if _, err := o.out.Write(b); err != nil {
		o.err = fmt.Errorf("storing the output: %w", err)
		return o.err
	}
	return nil
}

func (o *output) unchanged() bool { return o.same && o.n == o.in.Size() }

// finish writes output held back as a shorter prefix of the message.
func (o *output) finish() error {
	if o.same {
		return o.diverge()
	}
	return nil
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
