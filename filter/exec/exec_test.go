//go:build unix

package exec_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/pop3proxy/pop3proxy/filter"
	execfilter "github.com/pop3proxy/pop3proxy/filter/exec"
	"github.com/pop3proxy/pop3proxy/filter/filtertest"
	"github.com/pop3proxy/pop3proxy/yamlconf"
)

const execMsg = "From: a@example.com\r\nSubject: test\r\n\r\nbody line\r\n.dot line\r\n\xe4 8-bit\r\n"

var execMeta = filter.Meta{User: "alice", Upstream: "pop.example.com:995", Number: 7}

// execScript writes a shell script and returns the command that runs it
// with /bin/sh: executing a file just written races with forks in other
// goroutines that briefly hold it open for writing (ETXTBSY).
// TestExecRunsAnExecutable covers direct execution.
func execScript(t *testing.T, body string) []string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "filter.sh")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return []string{"/bin/sh", path}
}

// execPlugin provisions an exec filter as the chain would.
func execPlugin(t *testing.T, e *execfilter.Filter) *execfilter.Filter {
	t.Helper()
	if err := e.Provision(filter.Env{Name: "myfilter", Logger: zaptest.NewLogger(t)}); err != nil {
		t.Fatalf("Provision: %v", err)
	}
	return e
}

// execResult is what Modify did with a message.
type execResult struct {
	changed bool
	out     string // what Modify wrote to its out
	err     error
	took    time.Duration
}

func execRun(t *testing.T, e *execfilter.Filter, msg string, timeout time.Duration) execResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var out bytes.Buffer
	start := time.Now()
	changed, err := e.Modify(ctx, filter.NewMessage([]byte(msg), execMeta), &out)
	return execResult{changed, out.String(), err, time.Since(start)}
}

// execChanged runs e on msg and fails the test unless it succeeded with
// a changed message, which it returns.
func execChanged(t *testing.T, e *execfilter.Filter, msg string) string {
	t.Helper()
	r := execRun(t, e, msg, 10*time.Second)
	if r.err != nil || !r.changed {
		t.Fatalf("Modify = changed %v, %v, out %q; want a changed message", r.changed, r.err, r.out)
	}
	return r.out
}

// execUnchanged runs e on msg and fails the test unless it succeeded
// without a change, having written nothing.
func execUnchanged(t *testing.T, e *execfilter.Filter, msg string) {
	t.Helper()
	r := execRun(t, e, msg, 10*time.Second)
	if r.err != nil || r.changed || r.out != "" {
		t.Fatalf("Modify = changed %v, %v, out %q; want no change and nothing written", r.changed, r.err, r.out)
	}
}

func TestExecOutput(t *testing.T) {
	for _, tc := range []struct {
		name, script, want string
	}{
		{"sed adds a header line", "exec sed '1i\\\nX-Filtered: yes'", "X-Filtered: yes\r\n" + execMsg},
		{"LF output becomes CRLF", `printf 'Subject: lf\n\nline 1\nline 2\n'`, "Subject: lf\r\n\r\nline 1\r\nline 2\r\n"},
		{"CRLF and bare CR are kept", `printf 'Subject: x\r\n\r\na\rb\r\nc\n'`, "Subject: x\r\n\r\na\rb\r\nc\r\n"},
		{"no final newline is kept", `printf 'Subject: x\n\nlast'`, "Subject: x\r\n\r\nlast"},
		{"header added with an LF", `printf 'X-Added: yes\n'; exec cat`, "X-Added: yes\r\n" + execMsg},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := execPlugin(t, &execfilter.Filter{Command: execScript(t, tc.script)})
			if out := execChanged(t, e, execMsg); out != tc.want {
				t.Fatalf("Modify wrote %q, want %q", out, tc.want)
			}
		})
	}
}

// TestExecUnchangedIsDecidedFirst: output identical to the input is no
// change, whatever the input is: the header check and the LF conversion
// apply to changed output only.
func TestExecUnchangedIsDecidedFirst(t *testing.T) {
	cat := execPlugin(t, &execfilter.Filter{Command: execScript(t, "exec cat")})
	for _, tc := range []struct{ name, msg string }{
		{"a message", execMsg},
		{"no header", "just a body line\r\n"},
		{"starts with an empty line", "\r\nbody\r\n"},
		{"an mbox From line", "From a@example.com Mon Jan  1 00:00:00 2024\r\nSubject: x\r\n\r\nb\r\n"},
		{"bare LFs", "Subject: lf\n\nline 1\nline 2\r\nend\n"},
		{"bare LFs, no header", "body\nonly\n"},
		{"empty", ""},
		// Larger than a pipe's buffer and the comparison's chunks.
		{"1 MiB with bare LFs", "Subject: big\n\n" + strings.Repeat(strings.Repeat("y", 99)+"\n", 1<<20/100)},
	} {
		t.Run(tc.name, func(t *testing.T) { execUnchanged(t, cat, tc.msg) })
	}
	// Through the chain, the message delivered is the original.
	ch := filtertest.MustChain(t, "- {type: exec, command: ["+strings.Join(execScript(t, "exec cat"), ", ")+"]}")
	in := "no header\nbare LF\n"
	res, got := filtertest.Run(t, ch, []byte(in), execMeta)
	if res.Outcome != filter.Deliver || res.Changed || string(got) != in {
		t.Fatalf("Run = %v changed %v %q, want the original", res.Outcome, res.Changed, got)
	}
}

// TestExecOneByteIsAChange: output that differs from the input in one
// byte, anywhere, or by one byte more or less, is a change, delivered in
// full.
func TestExecOneByteIsAChange(t *testing.T) {
	big := "Subject: big\r\n\r\n" + strings.Repeat(strings.Repeat("z", 98)+"\r\n", 1<<20/100)
	for _, tc := range []struct {
		name, msg, script, want string
	}{
		{"one byte in the body", execMsg, "exec sed 's/body line/body lime/'", strings.Replace(execMsg, "body line", "body lime", 1)},
		{"one byte more", execMsg, "cat; printf x", execMsg + "x"},
		{"one byte less", execMsg, fmt.Sprintf("exec head -c %d", len(execMsg)-1), execMsg[:len(execMsg)-1]},
		{"the last byte of 1 MiB", big, "exec sed '$ s/z\r$/Z\r/'", big[:len(big)-3] + "Z\r\n"},
		{"one byte less of 1 MiB", big, fmt.Sprintf("exec head -c %d", len(big)-1), big[:len(big)-1]},
		// The equal part is converted too, once the output differs.
		{"bare LFs, then a change", "Subject: a\n\nb\n", "cat; printf 'c\\n'", "Subject: a\r\n\r\nb\r\nc\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := execPlugin(t, &execfilter.Filter{Command: execScript(t, tc.script)})
			if out := execChanged(t, e, tc.msg); out != tc.want {
				t.Fatalf("Modify wrote %d octets, want %d; they differ at %d", len(out), len(tc.want), firstDiff(out, tc.want))
			}
		})
	}
}

func firstDiff(a, b string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestExecStreams: neither the message nor the output is held whole in
// memory, whether the program changes the message or not.
func TestExecStreams(t *testing.T) {
	const size = 8 << 20
	msg := "Subject: big\r\n\r\n" + strings.Repeat(strings.Repeat("s", 98)+"\r\n", size/100)
	for _, script := range []string{"exec cat", "echo 'X-Big: yes'; exec cat"} {
		e := execPlugin(t, &execfilter.Filter{Command: execScript(t, script)})
		m := filter.NewMessage([]byte(msg), execMeta)
		var out countingWriter
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		changed, err := e.Modify(context.Background(), m, &out)
		runtime.ReadMemStats(&after)
		if err != nil {
			t.Fatalf("%s: %v", script, err)
		}
		if want := script != "exec cat"; changed != want || want && out.n != int64(len("X-Big: yes\r\n")+len(msg)) {
			t.Fatalf("%s: changed %v, %d octets written", script, changed, out.n)
		}
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 2<<20 {
			t.Errorf("%s: %d octets allocated for a message of %d", script, alloc, len(msg))
		}
	}
}

type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// TestExecRunsAnExecutable: the program is executed directly, found in PATH,
// with its arguments.
func TestExecRunsAnExecutable(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tagger")
	if err := os.WriteFile(path, []byte("#!/bin/sh\necho \"X-Tag: $1 $2\"\nexec cat\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(filepath.ListSeparator)+os.Getenv("PATH"))
	e := execPlugin(t, &execfilter.Filter{Command: []string{"tagger", "one", "two words"}})
	if out, want := execChanged(t, e, execMsg), "X-Tag: one two words\r\n"+execMsg; out != want {
		t.Fatalf("Modify wrote %q, want %q", out, want)
	}
}

func TestExecEnvironment(t *testing.T) {
	t.Setenv("POP3PROXY_TEST_SECRET", "hunter2")
	e := execPlugin(t, &execfilter.Filter{
		Command: execScript(t, `printf 'X-User: %s\nX-Upstream: %s\nX-Number: %s\nX-Filter: %s\nX-Lang: %s\nX-Extra: %s\nX-Secret: %s\n' \
	"$POP3PROXY_USER" "$POP3PROXY_UPSTREAM" "$POP3PROXY_MESSAGE_NUMBER" "$POP3PROXY_FILTER" "$LANG" "$EXTRA" "${POP3PROXY_TEST_SECRET-unset}"
test -n "$PATH" || echo "X-Path: missing"
exec cat`),
		Env: map[string]string{"EXTRA": "from config", "LANG": "en_US.UTF-8"},
	})
	out := execChanged(t, e, execMsg)
	want := "X-User: alice\r\nX-Upstream: pop.example.com:995\r\nX-Number: 7\r\nX-Filter: myfilter\r\n" +
		"X-Lang: en_US.UTF-8\r\nX-Extra: from config\r\nX-Secret: unset\r\n" + execMsg
	if out != want {
		t.Fatalf("Modify wrote %q, want %q", out, want)
	}
}

func TestExecFailures(t *testing.T) {
	for _, tc := range []struct {
		name, script string
		want         []string
	}{
		{"non-zero exit with stderr", "echo 'myfilter: cannot open /var/db/rules' >&2; exit 3",
			[]string{"exit status 3", `stderr: "myfilter: cannot open /var/db/rules"`}},
		{"killed by a signal", "kill -KILL $$", []string{"signal: killed"}},
		{"empty output", "cat >/dev/null", []string{"no message on stdout"}},
		{"not a message", "cat >/dev/null; echo OK", []string{`does not start with a header field: "OK"`}},
		{"mbox From line", "echo 'From a@example.com Mon Jan  1 00:00:00 2024'; cat", []string{"does not start with a header field"}},
		{"body only", "printf '\\nbody\\n'", []string{"does not start with a header field"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := execPlugin(t, &execfilter.Filter{Command: execScript(t, tc.script)})
			r := execRun(t, e, execMsg, 10*time.Second)
			if r.err == nil {
				t.Fatalf("Modify = changed %v, %q, want an error", r.changed, r.out)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.err.Error(), w) {
					t.Errorf("error %q lacks %q", r.err, w)
				}
			}
		})
	}
}

// TestExecStderrIsBounded: only the start of a chatty stderr goes into the
// error (and the log).
func TestExecStderrIsBounded(t *testing.T) {
	e := execPlugin(t, &execfilter.Filter{Command: execScript(t, "i=0; while [ $i -lt 2000 ]; do echo 'noise noise noise' >&2; i=$((i+1)); done; exit 1")})
	err := execRun(t, e, execMsg, 10*time.Second).err
	if err == nil || !strings.Contains(err.Error(), "exit status 1") {
		t.Fatalf("Modify error = %v", err)
	}
	if len(err.Error()) > 400 {
		t.Fatalf("error is %d bytes long: %q", len(err.Error()), err)
	}
}

// execAlive reports whether pid is a live process. A zombie counts as
// dead: it has been killed, and whether anyone reaps it (init in a
// container may not) is not the filter's business.
func execAlive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return !errors.Is(err, os.ErrNotExist) // no /proc: believe kill
	}
	// The state follows the parenthesised command name.
	if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) {
		return stat[i+2] != 'Z'
	}
	return true
}

// execPIDFiles returns paths for a test script to write process IDs to,
// and kills those processes at the end of the test, so that a failing test
// leaves nothing running.
func execPIDFiles(t *testing.T, names ...string) []string {
	t.Helper()
	dir := t.TempDir()
	var paths []string
	for _, n := range names {
		paths = append(paths, filepath.Join(dir, n+".pid"))
	}
	t.Cleanup(func() {
		for _, p := range paths {
			if b, err := os.ReadFile(p); err == nil {
				if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
	})
	return paths
}

// execReadPIDs reads the process IDs a test script wrote.
func execReadPIDs(t *testing.T, paths ...string) []int {
	t.Helper()
	var pids []int
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("the script did not write its PID: %v", err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 {
			t.Fatalf("bad PID %q in %s", b, p)
		}
		pids = append(pids, pid)
	}
	return pids
}

// execWaitDead fails the test unless every process is gone within a
// second (SIGKILL is sent; the kernel tears processes down asynchronously).
func execWaitDead(t *testing.T, pids []int) {
	t.Helper()
	for _, pid := range pids {
		deadline := time.Now().Add(time.Second)
		for execAlive(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("process %d is still alive", pid)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// TestExecTimeoutKillsTheGroup: at the deadline the whole process group
// dies, the shell and its child.
func TestExecTimeoutKillsTheGroup(t *testing.T) {
	pids := execPIDFiles(t, "leader", "child")
	leader, child := pids[0], pids[1]
	e := execPlugin(t, &execfilter.Filter{Command: execScript(t,
		"echo $$ > "+leader+"; sleep 10 & echo $! > "+child+"; wait")})
	r := execRun(t, e, execMsg, 300*time.Millisecond)
	err, took := r.err, r.took
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Modify error = %v, want a deadline error", err)
	}
	if !strings.Contains(err.Error(), "killed after") {
		t.Errorf("error %q does not say the program was killed", err)
	}
	// Well under a second: were only the shell killed, the sleeping child
	// would hold stdout open until the one-second WaitDelay.
	if took > 900*time.Millisecond {
		t.Fatalf("Modify took %v with a 300ms deadline", took)
	}
	execWaitDead(t, execReadPIDs(t, leader, child))
}

// TestExecBackgroundChildHoldingStdout: a background process that keeps
// stdout open cannot hold the message up: the program's output may be
// incomplete, so it is an error, and the leftover is killed.
func TestExecBackgroundChildHoldingStdout(t *testing.T) {
	child := execPIDFiles(t, "child")[0]
	e := execPlugin(t, &execfilter.Filter{Command: execScript(t, "cat; sleep 10 & echo $! > "+child)})
	r := execRun(t, e, execMsg, 10*time.Second)
	err, took := r.err, r.took
	if err == nil || !strings.Contains(err.Error(), "still held its output open") {
		t.Fatalf("Modify error = %v", err)
	}
	if took > 5*time.Second {
		t.Fatalf("Modify took %v", took)
	}
	execWaitDead(t, execReadPIDs(t, child))
}

// TestExecLeftoversAreKilled: a background process that lets go of stdout
// does not delay the result; it is killed all the same.
func TestExecLeftoversAreKilled(t *testing.T) {
	child := execPIDFiles(t, "child")[0]
	e := execPlugin(t, &execfilter.Filter{Command: execScript(t,
		"sleep 10 </dev/null >/dev/null 2>&1 & echo $! > "+child+"; echo 'X-Bg: 1'; exec cat")})
	r := execRun(t, e, execMsg, 10*time.Second)
	if r.err != nil || !r.changed || r.out != "X-Bg: 1\r\n"+execMsg {
		t.Fatalf("Modify = changed %v, %q, %v", r.changed, r.out, r.err)
	}
	if r.took > 5*time.Second {
		t.Fatalf("Modify took %v", r.took)
	}
	execWaitDead(t, execReadPIDs(t, child))
}

// TestExecProgramIgnoresStdin: a program that exits without reading its
// input does not block the writer: its output and exit status decide.
func TestExecProgramIgnoresStdin(t *testing.T) {
	big := "Subject: big\r\n\r\n" + strings.Repeat(strings.Repeat("x", 78)+"\r\n", 8<<20/80)
	for _, tc := range []struct {
		name, script, want, wantErr string
	}{
		{"exit 0", `printf 'Subject: replaced\r\n\r\nnew body\r\n'`, "Subject: replaced\r\n\r\nnew body\r\n", ""},
		{"exit 1", "exit 1", "", "exit status 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := execPlugin(t, &execfilter.Filter{Command: execScript(t, tc.script)})
			r := execRun(t, e, big, 10*time.Second)
			if r.took > 5*time.Second {
				t.Fatalf("Modify took %v", r.took)
			}
			if tc.wantErr != "" {
				if r.err == nil || !strings.Contains(r.err.Error(), tc.wantErr) {
					t.Fatalf("Modify error = %v, want %q", r.err, tc.wantErr)
				}
				return
			}
			if r.err != nil || !r.changed || r.out != tc.want {
				t.Fatalf("Modify = changed %v, %q, %v", r.changed, r.out, r.err)
			}
		})
	}
}

func TestExecMaxOutput(t *testing.T) {
	for _, tc := range []struct{ name, script string }{
		{"bigger message", "cat; cat /dev/null; printf 'x%.0s' $(seq 1 2000)"},
		{"endless output", "exec cat /dev/zero"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := execPlugin(t, &execfilter.Filter{Command: execScript(t, tc.script), MaxOutput: 1024})
			r := execRun(t, e, execMsg, 10*time.Second)
			if r.err == nil || !strings.Contains(r.err.Error(), "exceeds max_output (1024 bytes)") {
				t.Fatalf("Modify error = %v", r.err)
			}
			// The program dies of SIGPIPE instead of running on.
			if r.took > 5*time.Second {
				t.Fatalf("Modify took %v", r.took)
			}
		})
	}
	// Exactly max_output is allowed.
	e := execPlugin(t, &execfilter.Filter{Command: execScript(t, "echo 'X-A: b'; exec cat"), MaxOutput: yamlconf.ByteSize(len("X-A: b\n") + len(execMsg))})
	if r := execRun(t, e, execMsg, 10*time.Second); r.err != nil || !r.changed || r.out != "X-A: b\r\n"+execMsg {
		t.Fatalf("Modify at max_output = changed %v, %q, %v", r.changed, r.out, r.err)
	}
}

func TestExecProvisionErrors(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "plain.sh")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\ncat\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		e    execfilter.Filter
		want string
	}{
		{"no command", execfilter.Filter{}, "command is empty"},
		{"empty program", execfilter.Filter{Command: []string{""}}, "command is empty"},
		{"missing program", execfilter.Filter{Command: []string{"/nonexistent/myfilter"}}, `"/nonexistent/myfilter"`},
		{"not in PATH", execfilter.Filter{Command: []string{"pop3proxy-no-such-filter"}}, exec.ErrNotFound.Error()},
		{"not executable", execfilter.Filter{Command: []string{notExec}}, "permission denied"},
		{"a directory", execfilter.Filter{Command: []string{dir}}, dir},
		{"relative path", execfilter.Filter{Command: []string{"./filter.sh"}}, "use an absolute path"},
		{"NUL in an argument", execfilter.Filter{Command: []string{"/bin/cat", "a\x00b"}}, "command[1] contains a NUL"},
		{"bad env name", execfilter.Filter{Command: []string{"/bin/cat"}, Env: map[string]string{"A-B": "x"}}, `"A-B" is not a variable name`},
		{"env name starts with a digit", execfilter.Filter{Command: []string{"/bin/cat"}, Env: map[string]string{"1A": "x"}}, "not a variable name"},
		{"proxy's variables", execfilter.Filter{Command: []string{"/bin/cat"}, Env: map[string]string{"POP3PROXY_USER": "x"}}, "set by the proxy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.e.Provision(filter.Env{Name: "exec", Logger: zaptest.NewLogger(t)})
			if err == nil {
				t.Fatal("Provision succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q lacks %q", err, tc.want)
			}
		})
	}
}

// TestExecInTheChain checks that the YAML keys, timeout and on_error work
// through the chain.
func TestExecInTheChain(t *testing.T) {
	ok := execScript(t, "echo 'X-Exec: done'; exec cat")
	fails := execScript(t, "exit 2")
	for _, tc := range []struct {
		name, doc string
		outcome   filter.Outcome
		prefix    string
	}{
		{"modifies", "- {type: exec, command: [" + ok[0] + ", " + ok[1] + "], max_output: 1MiB}", filter.Deliver, "X-Exec: done\r\nFrom:"},
		{"fails with tempfail", "- {type: exec, command: [" + fails[0] + ", " + fails[1] + "]}", filter.TempFail, ""},
		{"fails with pass", "- {type: exec, name: myfilter, on_error: pass, command: [" + fails[0] + ", " + fails[1] + "]}", filter.Deliver, "X-Pop3proxy-Unscanned: myfilter failed\r\nFrom:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch, err := filtertest.Chain(t, tc.doc)
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			res, got := filtertest.Run(t, ch, []byte(execMsg), execMeta)
			if res.Outcome != tc.outcome || !bytes.HasPrefix(got, []byte(tc.prefix)) {
				t.Fatalf("Run = %v %q", res.Outcome, got)
			}
		})
	}
	for _, tc := range []struct{ doc, want string }{
		{"- {type: exec, command: /bin/cat}", "filters[0].command: expected a list"},
		{"- {type: exec, command: [/bin/cat], max_output: lots}", "filters[0].max_output"},
		{"- {type: exec, command: [/bin/cat], shell: true}", "filters[0].shell: unknown key"},
	} {
		if _, err := filtertest.Chain(t, tc.doc); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Build(%s) error = %v, want %q", tc.doc, err, tc.want)
		}
	}
}
