//go:build linux

package chaos

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"time"
)

// behaviour is what one client session does. Most sessions are what mail
// clients do; the hang-ups are the client-side faults.
type behaviour int

const (
	fetchDelete           behaviour = iota // RETR all, DELE all, QUIT
	fetchKeep                              // RETR all, QUIT (leave mail on the server)
	headersFirst                           // TOP n 0 for all, then RETR and DELE some, QUIT
	hangUpMidRetr                          // close while a message is arriving
	hangUpAfterDele                        // RETR, DELE, close without QUIT
	hangUpDuringScan                       // RETR, close before the answer
	hangUpDuringScanAhead                  // close right after the first message
	deleteThenRset                         // RETR, DELE, RSET, QUIT: nothing deleted
	idle                                   // log in, wait, QUIT
	numBehaviours
)

var behaviourNames = [...]string{
	"fetch+delete", "fetch+keep", "headers-first", "hang-up-mid-retr", "hang-up-after-dele",
	"hang-up-during-scan", "hang-up-during-scan-ahead", "dele+rset", "idle",
}

func (b behaviour) String() string { return behaviourNames[b] }

// behaviourWeights are the odds of each behaviour, in per mille.
var behaviourWeights = [numBehaviours]int{300, 130, 100, 100, 90, 90, 70, 60, 60}

func pickBehaviour(rng *rand.Rand) behaviour {
	n := rng.IntN(1000)
	for b, w := range behaviourWeights {
		if n < w {
			return behaviour(b)
		}
		n -= w
	}
	return fetchDelete
}

// pickPolite picks what mail clients do when nothing goes wrong.
func pickPolite(rng *rand.Rand) behaviour {
	return []behaviour{fetchDelete, fetchDelete, fetchKeep, headersFirst}[rng.IntN(4)]
}

// maxAnswer bounds what a client reads of one answer: the largest test
// message with fields in front fits many times over; an endless answer
// does not.
const maxAnswer = 8 << 20

// client is one mail client of a round.
type client struct {
	proxyAddr string
	login     string // user%upstream
	user      string
	pass      string
	oracle    *Oracle
	rng       *rand.Rand
	stats     *Stats
	end       time.Time // no session lasts past it
	slow      func(string)
}

// session runs one session of behaviour b. Errors are the expected
// consequence of faults; what matters is what the oracle records.
func (c *client) session(b behaviour) error {
	c.stats.Sessions.Add(1)
	conn, err := dialPOP3(c.proxyAddr, "", 30*time.Second)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()
	conn.end = c.end
	start := time.Now()
	defer func() {
		if d := time.Since(start); d > 20*time.Second && c.slow != nil {
			c.slow(fmt.Sprintf("%s session of %s took %s; last command %q", b, c.user, d.Round(time.Millisecond), conn.last))
		}
	}()
	if err := c.logIn(conn); err != nil {
		return fmt.Errorf("login: %w", err)
	}
	if b == idle {
		time.Sleep(time.Duration(c.rng.IntN(3000)) * time.Millisecond)
		_, err := conn.cmd("QUIT")
		return err
	}
	ids, err := conn.uidl()
	if err != nil {
		return fmt.Errorf("UIDL: %w", err)
	}
	nums := make([]int, 0, len(ids))
	for n := range ids {
		nums = append(nums, n)
	}
	sort.Ints(nums)
	if len(nums) == 0 {
		_, err := conn.cmd("QUIT")
		return err
	}
	// Counted only here: a session that never got this far, or found the
	// mailbox empty, hung up on nothing.
	if b >= hangUpMidRetr && b <= hangUpDuringScanAhead {
		c.stats.ClientFaults.Add(1)
	}
	note := b.String()
	switch b {
	case hangUpMidRetr:
		n := nums[c.rng.IntN(len(nums))]
		if _, err := conn.cmd("RETR " + strconv.Itoa(n)); err != nil {
			return err
		}
		// Some bytes of the message, then hang up; a short message may
		// end before, so the wait is short.
		conn.c.SetReadDeadline(time.Now().Add(time.Duration(c.rng.IntN(1000)) * time.Millisecond))
		conn.r.Discard(c.rng.IntN(64 << 10))
		return nil
	case hangUpDuringScan:
		conn.send("RETR " + strconv.Itoa(nums[c.rng.IntN(len(nums))]))
		time.Sleep(time.Duration(c.rng.IntN(300)) * time.Millisecond)
		return nil
	case hangUpDuringScanAhead:
		c.retr(conn, nums[0], ids[nums[0]], note)
		return nil
	case headersFirst:
		for _, n := range nums {
			if _, err := conn.cmd("TOP " + strconv.Itoa(n) + " 0"); err != nil {
				if isConnErr(err) {
					return err
				}
				c.stats.refused(err.(*pop3Error).line)
				continue
			}
			h, err := conn.multi(maxAnswer)
			if err != nil {
				return err
			}
			c.oracle.Headers(c.user, ids[n], h)
		}
	}

	var deleted []string
	for _, n := range nums {
		if b == headersFirst && c.rng.IntN(2) == 0 {
			continue
		}
		ok, err := c.retr(conn, n, ids[n], note)
		if err != nil {
			return err
		}
		if !ok || b == fetchKeep {
			continue
		}
		if _, err := conn.cmd("DELE " + strconv.Itoa(n)); err != nil {
			return err
		}
		deleted = append(deleted, ids[n])
		if b == hangUpAfterDele {
			return nil
		}
	}
	if b == deleteThenRset {
		if _, err := conn.cmd("RSET"); err != nil {
			return err
		}
		deleted = nil
	}
	// Recorded before QUIT is sent: from then on the server may commit,
	// whatever answer comes back.
	c.oracle.Committed(c.user, deleted, note)
	_, err = conn.cmd("QUIT")
	return err
}

// logIn logs in with a password mostly, and with an OAuth2 token in
// either mechanism and either form now and then.
func (c *client) logIn(conn *pop3Conn) error {
	r := c.rng.IntN(10)
	if r < 7 {
		return conn.login(c.login, c.pass)
	}
	mechanism := []string{"XOAUTH2", "OAUTHBEARER"}[r%2]
	if err := conn.loginToken(mechanism, c.login, "token-"+c.user, r == 9); err != nil {
		return err
	}
	c.stats.TokenLogins.Add(1)
	return nil
}

// retr retrieves message n; ok says it arrived whole. A -ERR answer is
// not an error: the client goes on with the next message, as mail
// clients do.
func (c *client) retr(conn *pop3Conn, n int, uid, note string) (ok bool, err error) {
	start := time.Now()
	if _, err := conn.cmd("RETR " + strconv.Itoa(n)); err != nil {
		if isConnErr(err) {
			return false, err
		}
		c.stats.refused(err.(*pop3Error).line)
		return false, nil
	}
	body, err := conn.multi(maxAnswer)
	if err != nil {
		return false, err
	}
	c.stats.retrTook(time.Since(start))
	c.oracle.Delivered(c.user, uid, body, note)
	c.stats.Delivered.Add(1)
	return true, nil
}

// isConnErr says whether err ended the connection, rather than being a
// -ERR answer.
func isConnErr(err error) bool {
	var pe *pop3Error
	return !errors.As(err, &pe)
}
