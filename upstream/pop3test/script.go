package pop3test

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// opKind is one kind of script step.
type opKind uint8

const (
	opSend     opKind = iota // S: text
	opExpect                 // C: text
	opRaw                    // S!raw / S!repeat
	opClose                  // S!close
	opSleep                  // S!sleep
	opStartTLS               // S!starttls
	opDiscard                // S!discard
	opSeq                    // S!seq
)

type step struct {
	line  int // in the script, for messages
	op    opKind
	text  string        // opSend, opExpect
	data  []byte        // opRaw: the bytes; opSeq: what comes before the number
	tail  []byte        // opSeq: what comes after the number
	count int           // opRaw, opSeq: how many times
	d     time.Duration // opSleep
}

// parseScript splits a script into the steps of each connection.
func parseScript(script string) ([][]step, error) {
	conns := [][]step{nil}
	for i, raw := range strings.Split(script, "\n") {
		n := i + 1
		line := strings.TrimRight(raw, "\r")
		trimmed := strings.TrimLeft(line, " \t")
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		cur := &conns[len(conns)-1]
		if len(*cur) > 0 && trimmed != "S!next" {
			if last := (*cur)[len(*cur)-1].op; last == opClose || last == opDiscard {
				return nil, fmt.Errorf("line %d: step after S!close or S!discard (start the next connection with S!next)", n)
			}
		}
		switch {
		case trimmed == "S:" || strings.HasPrefix(trimmed, "S: "):
			*cur = append(*cur, step{line: n, op: opSend, text: strings.TrimPrefix(strings.TrimPrefix(trimmed, "S:"), " ")})
		case trimmed == "C:" || strings.HasPrefix(trimmed, "C: "):
			*cur = append(*cur, step{line: n, op: opExpect, text: strings.TrimPrefix(strings.TrimPrefix(trimmed, "C:"), " ")})
		case strings.HasPrefix(trimmed, "S!"):
			name, arg, _ := strings.Cut(strings.TrimPrefix(trimmed, "S!"), " ")
			arg = strings.TrimSpace(arg)
			st, err := parseDirective(n, name, arg)
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", n, err)
			}
			if name == "next" {
				conns = append(conns, nil)
				continue
			}
			*cur = append(*cur, st)
		default:
			return nil, fmt.Errorf("line %d: %q does not start with \"S: \", \"C: \" or \"S!\"", n, trimmed)
		}
	}
	for i, c := range conns {
		if len(c) == 0 {
			return nil, fmt.Errorf("connection %d has an empty script", i+1)
		}
	}
	return conns, nil
}

func parseDirective(n int, name, arg string) (step, error) {
	st := step{line: n}
	noArg := func() error {
		if arg != "" {
			return fmt.Errorf("S!%s takes no argument", name)
		}
		return nil
	}
	switch name {
	case "next":
		return st, noArg()
	case "close":
		st.op = opClose
		return st, noArg()
	case "starttls":
		st.op = opStartTLS
		return st, noArg()
	case "discard":
		st.op = opDiscard
		return st, noArg()
	case "sleep":
		d, err := time.ParseDuration(arg)
		if err != nil || d < 0 {
			return st, fmt.Errorf("S!sleep wants a duration such as 2s, got %q", arg)
		}
		st.op, st.d = opSleep, d
		return st, nil
	case "raw":
		b, err := strconv.Unquote(arg)
		if err != nil {
			return st, fmt.Errorf("S!raw wants a Go-quoted string, got %q", arg)
		}
		st.op, st.data, st.count = opRaw, []byte(b), 1
		return st, nil
	case "repeat":
		countStr, q, _ := strings.Cut(arg, " ")
		count, err := strconv.Atoi(countStr)
		if err != nil || count < 0 {
			return st, fmt.Errorf("S!repeat wants a count and a Go-quoted string, got %q", arg)
		}
		b, err := strconv.Unquote(strings.TrimSpace(q))
		if err != nil || b == "" {
			return st, fmt.Errorf("S!repeat wants a count and a non-empty Go-quoted string, got %q", arg)
		}
		st.op, st.data, st.count = opRaw, []byte(b), count
		return st, nil
	case "seq":
		countStr, q, _ := strings.Cut(arg, " ")
		count, err := strconv.Atoi(countStr)
		if err != nil || count < 0 {
			return st, fmt.Errorf("S!seq wants a count and a Go-quoted string, got %q", arg)
		}
		b, err := strconv.Unquote(strings.TrimSpace(q))
		if err != nil || strings.Count(b, "%d") != 1 {
			return st, fmt.Errorf("S!seq wants a count and a Go-quoted string with one %%d, got %q", arg)
		}
		head, tail, _ := strings.Cut(b, "%d")
		st.op, st.data, st.tail, st.count = opSeq, []byte(head), []byte(tail), count
		return st, nil
	}
	return st, fmt.Errorf("unknown directive S!%s", name)
}
