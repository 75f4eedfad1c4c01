//go:build unix

package exec_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
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

func execRun(t *testing.T, e *execfilter.Filter, msg string, timeout time.Duration) ([]byte, error, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	out, err := e.Modify(ctx, filter.NewMessage([]byte(msg), execMeta))
	return out, err, time.Since(start)
}

func TestExecOutput(t *testing.T) {
	for _, tc := range []struct {
		name, script, want string
	}{
		// nil output: no change, so the chain keeps the original bytes.
		{"identity is no change", "exec cat", ""},
		{"sed adds a header line", "exec sed '1i\\\nX-Filtered: yes'", "X-Filtered: yes\r\n" + execMsg},
		{"LF output becomes CRLF", `printf 'Subject: lf\n\nline 1\nline 2\n'`, "Subject: lf\r\n\r\nline 1\r\nline 2\r\n"},
		{"CRLF and bare CR are kept", `printf 'Subject: x\r\n\r\na\rb\r\nc\n'`, "Subject: x\r\n\r\na\rb\r\nc\r\n"},
		{"no final newline is kept", `printf 'Subject: x\n\nlast'`, "Subject: x\r\n\r\nlast"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := execPlugin(t, &execfilter.Filter{Command: execScript(t, tc.script)})
			out, err, _ := execRun(t, e, execMsg, 10*time.Second)
			if err != nil {
				t.Fatalf("Modify: %v", err)
			}
			if string(out) != tc.want {
				t.Fatalf("Modify = %q, want %q", out, tc.want)
			}
		})
	}
}

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
	out, err, _ := execRun(t, e, execMsg, 10*time.Second)
	if err != nil {
		t.Fatalf("Modify: %v", err)
	}
	if want := "X-Tag: one two words\r\n" + execMsg; string(out) != want {
		t.Fatalf("Modify = %q, want %q", out, want)
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
	out, err, _ := execRun(t, e, execMsg, 10*time.Second)
	if err != nil {
		t.Fatalf("Modify: %v", err)
	}
	want := "X-User: alice\r\nX-Upstream: pop.example.com:995\r\nX-Number: 7\r\nX-Filter: myfilter\r\n" +
		"X-Lang: en_US.UTF-8\r\nX-Extra: from config\r\nX-Secret: unset\r\n" + execMsg
	if string(out) != want {
		t.Fatalf("Modify = %q, want %q", out, want)
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
			out, err, _ := execRun(t, e, execMsg, 10*time.Second)
			if err == nil {
				t.Fatalf("Modify = %q, want an error", out)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// TestExecStderrIsBounded: only the start of a chatty stderr goes into the
// error (and the log).
func TestExecStderrIsBounded(t *testing.T) {
	e := execPlugin(t, &execfilter.Filter{Command: execScript(t, "i=0; while [ $i -lt 2000 ]; do echo 'noise noise noise' >&2; i=$((i+1)); done; exit 1")})
	_, err, _ := execRun(t, e, execMsg, 10*time.Second)
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
	_, err, took := execRun(t, e, execMsg, 300*time.Millisecond)
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
	_, err, took := execRun(t, e, execMsg, 10*time.Second)
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
	out, err, took := execRun(t, e, execMsg, 10*time.Second)
	if err != nil || string(out) != "X-Bg: 1\r\n"+execMsg {
		t.Fatalf("Modify = %q, %v", out, err)
	}
	if took > 5*time.Second {
		t.Fatalf("Modify took %v", took)
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
			out, err, took := execRun(t, e, big, 10*time.Second)
			if took > 5*time.Second {
				t.Fatalf("Modify took %v", took)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Modify error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || string(out) != tc.want {
				t.Fatalf("Modify = %q, %v", out, err)
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
			_, err, took := execRun(t, e, execMsg, 10*time.Second)
			if err == nil || !strings.Contains(err.Error(), "exceeds max_output (1024 bytes)") {
				t.Fatalf("Modify error = %v", err)
			}
			// The program dies of SIGPIPE instead of running on.
			if took > 5*time.Second {
				t.Fatalf("Modify took %v", took)
			}
		})
	}
	// Exactly max_output is allowed.
	e := execPlugin(t, &execfilter.Filter{Command: execScript(t, "echo 'X-A: b'; exec cat"), MaxOutput: yamlconf.ByteSize(len("X-A: b\n") + len(execMsg))})
	if out, err, _ := execRun(t, e, execMsg, 10*time.Second); err != nil || string(out) != "X-A: b\r\n"+execMsg {
		t.Fatalf("Modify at max_output = %q, %v", out, err)
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
			res := ch.Run(context.Background(), filter.NewMessage([]byte(execMsg), execMeta))
			if res.Outcome != tc.outcome || !bytes.HasPrefix(res.Message, []byte(tc.prefix)) {
				t.Fatalf("Run = %v %q", res.Outcome, res.Message)
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
