//go:build linux

package docker

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/pop3proxy/pop3proxy/internal/testinfra"
)

// Where the test's images come from and go. The Dockerfile names its base
// images; the test seeds local storage with stand-ins under those names.
const (
	imageTag       = "localhost/pop3proxy:image-test"
	runtimeUser    = "65532:65532" // distroless "nonroot"
	stateDir       = "/var/lib/pop3proxy"
	configInImage  = "/etc/pop3proxy/config.yaml"
	offlineGOPROXY = "/goproxy" // in the golang stand-in
)

// Time limits: the whole test takes well under a minute here; these only
// stop a hung buildah.
const (
	quickTimeout = 2 * time.Minute
	buildTimeout = 8 * time.Minute
)

// TestImage builds docker/Dockerfile as `docker build` would, with buildah
// and without network: in place of golang:1.26-bookworm a busybox with
// this machine's Go toolchain, git, and a file:// module proxy holding the
// modules go.sum pins; in place of distroless a root with CA certificates
// and a passwd file. It then checks what the image promises: a static
// binary owned by nobody in particular, run as 65532 with nothing else in
// the image; -version reporting the revision built; the default command
// serving with docker/config.yaml (listeners moved to loopback ports) and
// its writable state on the volume; and the HEALTHCHECK, which is the
// binary itself, passing while the proxy runs and failing once it is gone.
func TestImage(t *testing.T) {
	buildah := testinfra.NeedBinary(t, "buildah")
	busybox := testinfra.NeedBinary(t, "busybox")
	git := testinfra.NeedBinary(t, "git")
	if isDynamic(t, busybox) {
		msg := busybox + " is linked dynamically and cannot run in an empty image: install Debian's busybox-static (./test.sh does)"
		if testinfra.IntegrationRequired() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	moduleRoot, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dockerfile := filepath.Join(moduleRoot, "docker", "Dockerfile")
	bases := fromImages(t, dockerfile)

	s := newStore(t, buildah)
	for _, base := range bases {
		switch {
		case strings.HasPrefix(base, "golang:"):
			s.seedGolang(t, "docker.io/library/"+base, busybox, git, moduleRoot)
		case strings.HasPrefix(base, "gcr.io/distroless/static"):
			s.seedDistroless(t, base)
		default:
			t.Fatalf("Dockerfile: FROM %s: the test has no stand-in for it", base)
		}
	}

	start := time.Now()
	s.must(t, buildTimeout, "bud", "--isolation", "chroot", "--pull=never", "--format", "docker",
		"--build-arg", "GOPROXY=file://"+offlineGOPROXY, "--build-arg", "GOSUMDB=off",
		"-f", dockerfile, "-t", imageTag, moduleRoot)
	t.Logf("image built in %v", time.Since(start).Round(time.Second))

	cfg := s.imageConfig(t)
	if cfg.User != runtimeUser {
		t.Errorf("image user %q, want %s", cfg.User, runtimeUser)
	}
	if !slices.Equal(cfg.Entrypoint, []string{"/pop3proxy"}) || !slices.Equal(cfg.Cmd, []string{"-config", configInImage}) {
		t.Errorf("entrypoint %q, cmd %q", cfg.Entrypoint, cfg.Cmd)
	}
	if _, ok := cfg.Volumes[stateDir]; !ok {
		t.Errorf("%s is not a volume: %v", stateDir, cfg.Volumes)
	}
	if cfg.Healthcheck == nil || len(cfg.Healthcheck.Test) != 4 || cfg.Healthcheck.Test[0] != "CMD" || cfg.Healthcheck.Test[1] != "/pop3proxy" {
		t.Fatalf("health check %+v: want CMD /pop3proxy -probe URL", cfg.Healthcheck)
	}

	ctr := s.must(t, quickTimeout, "from", "--pull=never", imageTag)
	s.checkContents(t, ctr)

	// -version: the revision the image was built from, as go build
	// stamped it from the .git in the build context.
	out := s.must(t, quickTimeout, "run", "--isolation", "chroot", ctr, "--", "/pop3proxy", "-version")
	if head, err := exec.Command(git, "-C", moduleRoot, "rev-parse", "HEAD").Output(); err == nil {
		if want := "revision " + strings.TrimSpace(string(head)); !strings.Contains(out, want) {
			t.Errorf("-version in the image printed %q, want %q", out, want)
		}
	} else if !strings.HasPrefix(out, "pop3proxy ") {
		t.Errorf("-version in the image printed %q", out)
	}
	t.Logf("in the image: %s", out)

	// The default command with the image's configuration, its listeners
	// moved to free loopback ports (chroot isolation shares this host's
	// network).
	ports, err := testinfra.FreePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	pop3Addr, healthAddr := fmt.Sprintf("127.0.0.1:%d", ports[0]), fmt.Sprintf("127.0.0.1:%d", ports[1])
	config := loopbackConfig(t, filepath.Join(moduleRoot, "docker", "config.yaml"), pop3Addr, healthAddr)
	s.must(t, quickTimeout, "copy", ctr, config, configInImage)
	proxy := s.start(t, append([]string{"run", "--isolation", "chroot", ctr, "--"}, append(cfg.Entrypoint, cfg.Cmd...)...))
	waitGreeting(t, pop3Addr, proxy)

	// The HEALTHCHECK as the image has it, in a container of its own,
	// aimed at the moved listener.
	health := slices.Clone(cfg.Healthcheck.Test[1:])
	health[2] = strings.Replace(health[2], "127.0.0.1:9110", healthAddr, 1)
	if health[2] == cfg.Healthcheck.Test[3] {
		t.Fatalf("health check URL %q does not name 127.0.0.1:9110 (docker/config.yaml's metrics.listen)", health[2])
	}
	checker := s.must(t, quickTimeout, "from", "--pull=never", imageTag)
	runHealth := func() (string, error) {
		return s.buildah(quickTimeout, append([]string{"run", "--isolation", "chroot", checker, "--"}, health...)...)
	}
	if out, err := runHealth(); err != nil {
		t.Errorf("health check failed while the proxy runs: %v\n%s\nproxy output:\n%s", err, out, proxy.output())
	}
	proxy.kill()
	if out, err := runHealth(); err == nil {
		t.Errorf("health check passed with the proxy stopped: %s", out)
	}
	if t.Failed() {
		t.Logf("proxy output:\n%s", proxy.output())
	}
}

// store is a private buildah storage in a temporary directory: the test
// neither sees nor leaves images in the machine's own.
type store struct {
	bin  string
	dir  string
	args []string
	env  []string
}

func newStore(t *testing.T, bin string) *store {
	t.Helper()
	dir, err := os.MkdirTemp("", "pop3proxy-image-test-")
	if err != nil {
		t.Fatal(err)
	}
	s := &store{
		bin: bin,
		dir: dir,
		// vfs works on any file system, inside containers too.
		args: []string{"--root", filepath.Join(dir, "root"), "--runroot", filepath.Join(dir, "runroot"), "--storage-driver", "vfs"},
	}
	// Short names (golang:1.26-bookworm) resolve to Docker Hub, as with
	// docker; buildah's cache mounts live under TMPDIR.
	registries := filepath.Join(dir, "registries.conf")
	if err := os.WriteFile(registries, []byte("unqualified-search-registries = [\"docker.io\"]\nshort-name-mode = \"permissive\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	s.env = append(os.Environ(), "TMPDIR="+tmp, "CONTAINERS_REGISTRIES_CONF="+registries, "BUILDAH_ISOLATION=chroot")
	t.Cleanup(func() { s.remove(t) })
	return s
}

// remove deletes the containers, images and the directory, unless
// something is still mounted inside it: removing through a mount point
// could reach the host's files.
func (s *store) remove(t *testing.T) {
	s.buildah(quickTimeout, "umount", "--all")
	s.buildah(quickTimeout, "rm", "--all")
	s.buildah(quickTimeout, "rmi", "--all", "--force")
	if mounts := mountsUnder(s.dir); len(mounts) > 0 {
		t.Errorf("not removing %s: still mounted there: %v", s.dir, mounts)
		return
	}
	if err := os.RemoveAll(s.dir); err != nil {
		t.Errorf("removing the test's image storage: %v", err)
	}
}

func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && (fields[4] == dir || strings.HasPrefix(fields[4], dir+"/")) {
			out = append(out, fields[4])
		}
	}
	return out
}

// buildah runs a buildah command within timeout and returns its standard
// output, trimmed; the error carries standard error.
func (s *store) buildah(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.bin, append(slices.Clone(s.args), args...)...)
	cmd.Env = s.env
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return strings.TrimSpace(stdout.String()), fmt.Errorf("buildah %s: %v\n%s", strings.Join(args, " "), err, lastLines(stderr.String(), 40))
	}
	return strings.TrimSpace(stdout.String()), nil
}

func (s *store) must(t *testing.T, timeout time.Duration, args ...string) string {
	t.Helper()
	out, err := s.buildah(timeout, args...)
	if err != nil {
		t.Fatalf("%v\n%s", err, lastLines(out, 40))
	}
	return out
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// seedGolang makes the stand-in for the golang image: busybox for the
// shell of RUN, this machine's Go toolchain at /usr/local/go as in the
// real image, git (with its libraries) so that go build can stamp the
// revision, and at /goproxy a file:// module proxy with exactly the
// modules `go mod download` fetches for this module, taken from the local
// module cache.
func (s *store) seedGolang(t *testing.T, name, busybox, git, moduleRoot string) {
	t.Helper()
	goroot := goEnv(t, "GOROOT")
	modcache := goEnv(t, "GOMODCACHE")

	ctr := s.must(t, quickTimeout, "from", "scratch")
	root := s.must(t, quickTimeout, "mount", ctr)
	for _, d := range []string{"bin", "root", "go", "usr/bin", "usr/local", "goproxy"} {
		mkdir(t, filepath.Join(root, d), 0o755)
	}
	mkdir(t, filepath.Join(root, "tmp"), 0o1777)
	installBusybox(t, busybox, root)
	run(t, "cp", "-a", goroot, filepath.Join(root, "usr/local/go"))
	copyWithLibraries(t, git, root)

	// The module proxy: go mod download into an empty module cache, from
	// the local module cache first (the machine's own GOPROXY only for a
	// module it lacks), checked against go.sum, read-only: a module the
	// build needs but go.sum does not pin fails here. The image build
	// itself then has this directory as its only source.
	mods := filepath.Join(s.dir, "modcache")
	download := exec.Command("go", "mod", "download")
	download.Dir = moduleRoot
	download.Env = append(os.Environ(), "GOMODCACHE="+mods,
		"GOPROXY=file://"+filepath.Join(modcache, "cache", "download")+","+goEnv(t, "GOPROXY"),
		"GOSUMDB=off", "GOFLAGS=-mod=readonly -modcacherw", "GOTOOLCHAIN=local")
	if out, err := download.CombinedOutput(); err != nil {
		t.Fatalf("go mod download from the local module cache: %v\n%s", err, out)
	}
	run(t, "cp", "-a", filepath.Join(mods, "cache", "download")+"/.", filepath.Join(root, "goproxy"))

	// The real image's environment.
	s.must(t, quickTimeout, "config",
		"--env", "PATH=/usr/local/go/bin:/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"--env", "GOPATH=/go", "--env", "GOTOOLCHAIN=local", "--env", "HOME=/root", "--workingdir", "/go", ctr)
	s.must(t, quickTimeout, "commit", "--quiet", ctr, name)
	s.must(t, quickTimeout, "rm", ctr)
}

// seedDistroless makes the stand-in for distroless static: CA
// certificates, passwd and group with nonroot (65532), a /tmp and the
// nonroot user and home, as the real image has them.
func (s *store) seedDistroless(t *testing.T, name string) {
	t.Helper()
	ctr := s.must(t, quickTimeout, "from", "scratch")
	root := s.must(t, quickTimeout, "mount", ctr)
	mkdir(t, filepath.Join(root, "etc/ssl/certs"), 0o755)
	mkdir(t, filepath.Join(root, "tmp"), 0o1777)
	mkdir(t, filepath.Join(root, "home/nonroot"), 0o700)
	if err := os.Chown(filepath.Join(root, "home/nonroot"), 65532, 65532); err != nil {
		t.Fatal(err)
	}
	certs, err := os.ReadFile("/etc/ssl/certs/ca-certificates.crt")
	if err != nil {
		t.Fatalf("CA certificates for the distroless stand-in: %v (Debian package ca-certificates)", err)
	}
	writeFile(t, filepath.Join(root, "etc/ssl/certs/ca-certificates.crt"), certs, 0o644)
	writeFile(t, filepath.Join(root, "etc/passwd"), []byte("root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"), 0o644)
	writeFile(t, filepath.Join(root, "etc/group"), []byte("root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n"), 0o644)
	s.must(t, quickTimeout, "config", "--user", runtimeUser, "--workingdir", "/home/nonroot", ctr)
	s.must(t, quickTimeout, "commit", "--quiet", ctr, name)
	s.must(t, quickTimeout, "rm", ctr)
}

// imageConfig is the part of the Docker image configuration the test
// checks.
type imageConfig struct {
	User        string
	Entrypoint  []string
	Cmd         []string
	Volumes     map[string]struct{}
	Healthcheck *struct{ Test []string }
}

func (s *store) imageConfig(t *testing.T) imageConfig {
	t.Helper()
	var img struct {
		Docker struct {
			Config imageConfig `json:"config"`
		}
	}
	if err := json.Unmarshal([]byte(s.must(t, quickTimeout, "inspect", "--type", "image", imageTag)), &img); err != nil {
		t.Fatal(err)
	}
	return img.Docker.Config
}

// checkContents: the runtime image holds the static binary, the
// configuration and the state directories owned by the runtime user, and
// nothing of the build (no Go toolchain, no sources, no shell).
func (s *store) checkContents(t *testing.T, ctr string) {
	t.Helper()
	root := s.must(t, quickTimeout, "mount", ctr)
	defer s.buildah(quickTimeout, "umount", ctr)
	bin := filepath.Join(root, "pop3proxy")
	if isDynamic(t, bin) {
		t.Error("/pop3proxy is linked dynamically; the distroless static image has no libc")
	}
	for _, gone := range []string{"usr/local/go", "src", "go", "bin/sh", "goproxy"} {
		if _, err := os.Lstat(filepath.Join(root, gone)); err == nil {
			t.Errorf("the runtime image contains /%s", gone)
		}
	}
	if _, err := os.Stat(filepath.Join(root, configInImage)); err != nil {
		t.Errorf("no default configuration: %v", err)
	}
	for _, d := range []string{stateDir, stateDir + "/quarantine", stateDir + "/spool"} {
		st, err := os.Stat(filepath.Join(root, d))
		if err != nil {
			t.Errorf("%s: %v", d, err)
			continue
		}
		sys := st.Sys().(*syscall.Stat_t)
		if !st.IsDir() || fmt.Sprintf("%d:%d", sys.Uid, sys.Gid) != runtimeUser {
			t.Errorf("%s: %v owned by %d:%d, want a directory of %s", d, st.Mode(), sys.Uid, sys.Gid, runtimeUser)
		}
		// Quarantined mail is private (COPY makes the volume's top
		// directory itself 0755, which shows only these two names).
		if d != stateDir && st.Mode().Perm()&0o007 != 0 {
			t.Errorf("%s: %v, want it closed to others", d, st.Mode())
		}
	}
}

// process is a buildah run in the background.
type process struct {
	cmd  *exec.Cmd
	out  *bytes.Buffer
	done chan struct{}
}

func (s *store) start(t *testing.T, args []string) *process {
	t.Helper()
	cmd := exec.Command(s.bin, append(slices.Clone(s.args), args...)...)
	cmd.Env = s.env
	// Its own process group: buildah and what it runs are killed together.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p := &process{cmd: cmd, out: &bytes.Buffer{}, done: make(chan struct{})}
	out, err := os.CreateTemp(s.dir, "run-*.log")
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		cmd.Wait()
		out.Close()
		b, _ := os.ReadFile(out.Name())
		p.out.Write(b)
		close(p.done)
	}()
	t.Cleanup(p.kill)
	return p
}

// kill ends the process group and waits for it.
func (p *process) kill() {
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

func (p *process) output() string {
	select {
	case <-p.done:
		return p.out.String()
	default:
		return "(still running)"
	}
}

// waitGreeting waits until a POP3 greeting comes from addr.
func waitGreeting(t *testing.T, addr string, p *process) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if strings.HasPrefix(line, "+OK") {
				return
			}
		}
		select {
		case <-p.done:
			t.Fatalf("the image's default command exited:\n%s", p.output())
		default:
		}
		if time.Now().After(deadline) {
			p.kill()
			t.Fatalf("the image's default command does not serve POP3 on %s:\n%s", addr, p.output())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// loopbackConfig is docker/config.yaml with listen and metrics.listen set
// to the given addresses and the scanners' addresses (the compose
// services, which do not exist here) to a loopback port nobody listens
// on, so that not even a DNS query leaves the machine; everything else as
// the image has it.
func loopbackConfig(t *testing.T, path, listen, metrics string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	setKey(t, doc.Content[0], listen, "listen")
	setKey(t, doc.Content[0], metrics, "metrics", "listen")
	nowhere := "tcp://" + testinfra.FreeAddr(t)
	for i := 0; i+1 < len(doc.Content[0].Content); i += 2 {
		if doc.Content[0].Content[i].Value != "filters" {
			continue
		}
		for _, f := range doc.Content[0].Content[i+1].Content {
			for j := 0; j+1 < len(f.Content); j += 2 {
				if f.Content[j].Value == "address" {
					f.Content[j+1].Value = nowhere
				}
			}
		}
	}
	out, err := yaml.Marshal(&doc)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, p, out, 0o644)
	return p
}

// setKey sets the scalar at a key path of a mapping, which must exist.
func setKey(t *testing.T, m *yaml.Node, value string, path ...string) {
	t.Helper()
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value != path[0] {
			continue
		}
		if len(path) == 1 {
			m.Content[i+1].Value = value
			return
		}
		setKey(t, m.Content[i+1], value, path[1:]...)
		return
	}
	t.Fatalf("docker/config.yaml has no key %s", strings.Join(path, "."))
}

// fromImages lists the images the Dockerfile's stages start from.
func fromImages(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range regexp.MustCompile(`(?mi)^FROM\s+(\S+)`).FindAllStringSubmatch(string(b), -1) {
		out = append(out, m[1])
	}
	if len(out) == 0 {
		t.Fatal("Dockerfile has no FROM")
	}
	return out
}

func isDynamic(t *testing.T, path string) bool {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return true
		}
	}
	return false
}

// installBusybox puts busybox and a link for each of its applets in /bin.
func installBusybox(t *testing.T, busybox, root string) {
	t.Helper()
	b, err := os.ReadFile(busybox)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(root, "bin/busybox"), b, 0o755)
	list, err := exec.Command(busybox, "--list").Output()
	if err != nil {
		t.Fatalf("busybox --list: %v", err)
	}
	for _, applet := range strings.Fields(string(list)) {
		link := filepath.Join(root, "bin", applet)
		if err := os.Symlink("busybox", link); err != nil && !errors.Is(err, fs.ErrExist) {
			t.Fatal(err)
		}
	}
}

// copyWithLibraries copies a dynamically linked program and the shared
// libraries ldd names to the same paths under root.
func copyWithLibraries(t *testing.T, prog, root string) {
	t.Helper()
	ldd, err := exec.Command("ldd", prog).Output()
	if err != nil {
		t.Fatalf("ldd %s: %v", prog, err)
	}
	files := []string{prog}
	for _, m := range regexp.MustCompile(`(/\S+)`).FindAllString(string(ldd), -1) {
		files = append(files, m)
	}
	for _, f := range files {
		mkdir(t, filepath.Join(root, filepath.Dir(f)), 0o755)
		run(t, "cp", "-L", f, filepath.Join(root, f))
	}
}

func goEnv(t *testing.T, name string) string {
	t.Helper()
	out, err := exec.Command("go", "env", name).Output()
	if err != nil || strings.TrimSpace(string(out)) == "" {
		t.Fatalf("go env %s: %v", name, err)
	}
	return strings.TrimSpace(string(out))
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func mkdir(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(path, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // MkdirAll's mode is masked
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path string, b []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, b, mode); err != nil {
		t.Fatal(err)
	}
}
