package main

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/pop3proxy/pop3proxy/proxy/pop3server"
)

// lockName is the lock file in the Maildir's top directory, next to cur/,
// new/ and tmp/, where Maildir readers do not look for mail.
const lockName = ".pop3-maildir-example.lock"

// checkMaildir reports whether dir has the cur/, new/ and tmp/ of a Maildir.
func checkMaildir(dir string) error {
	for _, sub := range []string{"cur", "new", "tmp"} {
		st, err := os.Stat(filepath.Join(dir, sub))
		if err != nil {
			return fmt.Errorf("%s is not a Maildir (%w); run with -init to create one", dir, err)
		}
		if !st.IsDir() {
			return fmt.Errorf("%s is not a Maildir: %s is not a directory", dir, sub)
		}
	}
	return nil
}

// mailbox is one session's view of a Maildir: the files in new/ and cur/
// when the session opened, oldest first. It implements pop3server.Mailbox.
type mailbox struct {
	dir   string
	lock  *os.File
	files []mailFile
	infos []pop3server.MessageInfo
}

type mailFile struct {
	sub  string // "new" or "cur"
	name string // the file name, flags included
	base string // the name before ':', stable when flags change
}

var _ pop3server.Mailbox = (*mailbox)(nil)

// openMailbox locks the Maildir and lists it. The lock is an exclusive
// lock on a file in the Maildir (lockFile), so a second session gets
// pop3server.ErrInUse ([IN-USE], RFC 2449 §8.1.2), whether it is served by this
// process or by another instance of it: the lock belongs to an open file,
// not to a process.
func openMailbox(dir string) (*mailbox, error) {
	lock, err := os.OpenFile(filepath.Join(dir, lockName), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := lockFile(lock); err != nil {
		lock.Close()
		if errors.Is(err, errLocked) {
			return nil, pop3server.ErrInUse
		}
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	mb := &mailbox{dir: dir, lock: lock}
	if err := mb.scan(); err != nil {
		mb.Close()
		return nil, err
	}
	return mb, nil
}

// scan lists new/ and cur/ in delivery order and computes sizes and UIDs.
func (mb *mailbox) scan() error {
	type entry struct {
		mailFile
		key deliveryKey
	}
	var entries []entry
	for _, sub := range []string{"new", "cur"} {
		des, err := os.ReadDir(filepath.Join(mb.dir, sub))
		if err != nil {
			return err
		}
		for _, de := range des {
			// Dot files are not messages (Maildir convention).
			if !de.Type().IsRegular() || strings.HasPrefix(de.Name(), ".") {
				continue
			}
			base, _, _ := strings.Cut(de.Name(), ":")
			e := entry{mailFile: mailFile{sub: sub, name: de.Name(), base: base}}
			e.key = parseDeliveryKey(base)
			if e.key.sec == 0 {
				if info, err := de.Info(); err == nil {
					e.key.sec = info.ModTime().Unix()
				}
			}
			entries = append(entries, e)
		}
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].key.less(entries[j].key) })

	mb.files = make([]mailFile, 0, len(entries))
	mb.infos = make([]pop3server.MessageInfo, 0, len(entries))
	for _, e := range entries {
		f, err := mb.openFile(e.mailFile)
		if errors.Is(err, os.ErrNotExist) {
			continue // removed since ReadDir: not part of this session
		}
		if err != nil {
			return err
		}
		size, err := crlfSize(f)
		f.Close()
		if err != nil {
			return err
		}
		mb.files = append(mb.files, e.mailFile)
		mb.infos = append(mb.infos, pop3server.MessageInfo{Size: size, UID: uidFor(e.base)})
	}
	return nil
}

// deliveryKey orders Maildir files by delivery time. Maildir names start
// with the delivery time in seconds, and the common "M<microseconds>" part
// orders deliveries within a second; the name breaks the remaining ties.
type deliveryKey struct {
	sec, usec int64
	name      string
}

func (a deliveryKey) less(b deliveryKey) bool {
	if a.sec != b.sec {
		return a.sec < b.sec
	}
	if a.usec != b.usec {
		return a.usec < b.usec
	}
	return a.name < b.name
}

func parseDeliveryKey(base string) deliveryKey {
	k := deliveryKey{name: base}
	first, rest, _ := strings.Cut(base, ".")
	k.sec, _ = strconv.ParseInt(first, 10, 64)
	unique, _, _ := strings.Cut(rest, ".")
	if i := strings.IndexByte(unique, 'M'); i >= 0 {
		j := i + 1
		for j < len(unique) && '0' <= unique[j] && unique[j] <= '9' {
			j++
		}
		k.usec, _ = strconv.ParseInt(unique[i+1:j], 10, 64)
	}
	return k
}

// uidFor returns the unique-id of a message: its Maildir base name, which
// is unique and never changes (flags live after the ':'), if it fits
// RFC 1939 §7 (1-70 octets in 0x21-0x7E); otherwise a hash of it.
func uidFor(base string) string {
	ok := len(base) >= 1 && len(base) <= 70
	for i := 0; ok && i < len(base); i++ {
		ok = base[i] >= 0x21 && base[i] <= 0x7E
	}
	if ok {
		return base
	}
	sum := sha256.Sum256([]byte(base))
	return hex.EncodeToString(sum[:16])
}

// openFile opens a message file. Another mail reader may have moved it from
// new/ to cur/ or changed its flags since the scan, so on ErrNotExist it is
// looked up again by base name.
func (mb *mailbox) openFile(f mailFile) (*os.File, error) {
	file, err := os.Open(filepath.Join(mb.dir, f.sub, f.name))
	if !errors.Is(err, os.ErrNotExist) {
		return file, err
	}
	path, ferr := mb.find(f.base)
	if ferr != nil {
		return nil, err
	}
	return os.Open(path)
}

// find returns the current path of the message with the given base name.
func (mb *mailbox) find(base string) (string, error) {
	for _, sub := range []string{"cur", "new"} {
		des, err := os.ReadDir(filepath.Join(mb.dir, sub))
		if err != nil {
			return "", err
		}
		for _, de := range des {
			if n := de.Name(); n == base || strings.HasPrefix(n, base+":") {
				return filepath.Join(mb.dir, sub, n), nil
			}
		}
	}
	return "", os.ErrNotExist
}

// Messages returns the listing made when the mailbox was opened.
func (mb *mailbox) Messages() []pop3server.MessageInfo { return mb.infos }

// Open streams message n with bare LFs turned into CRLF.
func (mb *mailbox) Open(n int) (io.ReadCloser, error) {
	if n < 1 || n > len(mb.files) {
		return nil, pop3server.ErrNoSuchMessage
	}
	f, err := mb.openFile(mb.files[n-1])
	if err != nil {
		return nil, err
	}
	return newCRLFReader(f), nil
}

// errNotRemoved is the QUIT answer of RFC 1939 §6 when deletion failed.
var errNotRemoved = &pop3server.Error{Message: "some deleted messages not removed"}

// Delete removes the files of the given messages. It is called only on QUIT
// (the UPDATE state); a message already gone counts as removed.
func (mb *mailbox) Delete(numbers []int) error {
	var errs []error
	for _, n := range numbers {
		if n < 1 || n > len(mb.files) {
			errs = append(errs, fmt.Errorf("no message %d", n))
			continue
		}
		f := mb.files[n-1]
		err := os.Remove(filepath.Join(mb.dir, f.sub, f.name))
		if errors.Is(err, os.ErrNotExist) {
			var path string
			if path, err = mb.find(f.base); err == nil {
				err = os.Remove(path)
			}
		}
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		e := *errNotRemoved
		e.Err = err
		return &e
	}
	return nil
}

// Close releases the lock.
func (mb *mailbox) Close() error {
	if mb.lock == nil {
		return nil
	}
	err := mb.lock.Close() // closing the file releases the lock
	mb.lock = nil
	return err
}

// backend serves one user's Maildir. It implements pop3server.Backend and
// pop3server.APOPBackend.
type backend struct {
	dir      string
	user     string
	password string
}

var (
	_ pop3server.Backend     = (*backend)(nil)
	_ pop3server.APOPBackend = (*backend)(nil)
)

// Login checks USER/PASS. The comparisons take constant time so that
// response timing does not reveal how much of a guess was right.
func (b *backend) Login(ctx context.Context, c *pop3server.ConnInfo, username, password string) (pop3server.Session, error) {
	userOK := subtle.ConstantTimeCompare([]byte(username), []byte(b.user))
	passOK := subtle.ConstantTimeCompare([]byte(password), []byte(b.password))
	if userOK&passOK != 1 {
		return nil, pop3server.ErrAuthFailed
	}
	return b.open()
}

// LoginAPOP checks an APOP digest, the lower-case hex MD5 of the greeting's
// timestamp followed by the password (RFC 1939 §7).
func (b *backend) LoginAPOP(ctx context.Context, c *pop3server.ConnInfo, username, timestamp, digest string) (pop3server.Session, error) {
	want := pop3server.APOPDigest(timestamp, b.password)
	userOK := subtle.ConstantTimeCompare([]byte(username), []byte(b.user))
	digestOK := subtle.ConstantTimeCompare([]byte(strings.ToLower(digest)), []byte(want))
	if userOK&digestOK != 1 {
		return nil, pop3server.ErrAuthFailed
	}
	return b.open()
}

func (b *backend) open() (pop3server.Session, error) {
	mb, err := openMailbox(b.dir)
	if err != nil {
		return nil, err
	}
	return pop3server.NewMailboxSession(mb), nil
}
