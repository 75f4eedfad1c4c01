package composetest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	"go.yaml.in/yaml/v3"
)

// The files under test, relative to this directory.
const (
	dockerDir         = ".."
	composePath       = "../compose.yaml"
	configPath        = "../config.yaml"
	dockerfilePath    = "../Dockerfile"
	spamdDockerfile   = "../spamassassin/Dockerfile"
	proxyService      = "pop3proxy"
	proxyConfigTarget = "/etc/pop3proxy/config.yaml"
)

// scannerPorts is where each scanner service listens inside the stack:
// 3310 is clamd's TCPSocket in ClamAV's official image; spamd's port is
// checked against its Dockerfile.
var scannerPorts = map[string]int{"clamav": 3310, "spamassassin": 783}

// loadCompose loads a compose document as `docker compose` does:
// validated against the Compose Specification's JSON schema, interpolated,
// normalised, with paths resolved against docker/ and the references
// between services, volumes and networks checked.
func loadCompose(t *testing.T, content []byte) (*types.Project, error) {
	t.Helper()
	wd, err := filepath.Abs(dockerDir)
	if err != nil {
		t.Fatal(err)
	}
	return loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  wd,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(wd, "compose.yaml"), Content: content}},
		Environment: types.Mapping{}, // not the caller's: the file must not depend on it
	})
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestComposeSpec: compose.yaml is a valid Compose file.
func TestComposeSpec(t *testing.T) {
	p, err := loadCompose(t, readFile(t, composePath))
	if err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	if p.Name != "pop3proxy" {
		t.Errorf("project name %q", p.Name)
	}
}

// The validation can fail: documents with a misspelt dependency
// condition, an unknown key, a dependency on a missing service, or an
// undeclared named volume are refused.
func TestComposeSpecRefusesMistakes(t *testing.T) {
	good := string(readFile(t, composePath))
	for name, edit := range map[string][2]string{
		"bad condition":       {"condition: service_healthy", "condition: service_happy"},
		"unknown key":         {"stop_grace_period:", "stop_grace_periode:"},
		"missing service":     {"      spamassassin:\n        condition", "      spamd:\n        condition"},
		"undeclared volume":   {"- clamav-db:/var/lib/clamav", "- clamav-sigs:/var/lib/clamav"},
		"bad healthcheck":     {"retries: 3", "retries: three"},
		"bad port":            {`"127.0.0.1:110:1110"`, `"127.0.0.1:110:port"`},
		"unknown service key": {"\n  clamav:\n", "\n  clamav:\n    imagee: x\n"},
		"duration not valid":  {"start_period: 6m", "start_period: six minutes"},
	} {
		if !strings.Contains(good, edit[0]) {
			t.Errorf("%s: compose.yaml no longer contains %q; update the test", name, edit[0])
			continue
		}
		if _, err := loadCompose(t, []byte(strings.Replace(good, edit[0], edit[1], 1))); err == nil {
			t.Errorf("%s: compose.yaml with %q accepted", name, edit[1])
		}
	}
}

// proxyConfig is what the topology needs of docker/config.yaml.
type proxyConfig struct {
	Listen    string `yaml:"listen"`
	ListenTLS string `yaml:"listen_tls"`
	TLS       struct {
		Cert    string `yaml:"cert"`
		Require string `yaml:"require"`
	} `yaml:"tls"`
	Metrics struct {
		Listen string `yaml:"listen"`
	} `yaml:"metrics"`
	SpoolDir string           `yaml:"spool_dir"`
	Filters  []map[string]any `yaml:"filters"`
}

// dockerfile is a Dockerfile's instructions, continuation lines joined.
type dockerfile []string

func parseDockerfile(b []byte) dockerfile {
	var out dockerfile
	var cur strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if cur.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if strings.HasSuffix(line, `\`) {
			cur.WriteString(strings.TrimSuffix(line, `\`) + " ")
			continue
		}
		cur.WriteString(line)
		out = append(out, strings.Join(strings.Fields(cur.String()), " "))
		cur.Reset()
	}
	return out
}

// all returns the arguments of every instruction named inst.
func (d dockerfile) all(inst string) []string {
	var out []string
	for _, l := range d {
		if name, args, _ := strings.Cut(l, " "); strings.EqualFold(name, inst) {
			out = append(out, args)
		}
	}
	return out
}

// execForm returns the JSON array after prefix in the last instruction
// named inst (CMD, ENTRYPOINT, or HEALTHCHECK's CMD).
func (d dockerfile) execForm(inst string) []string {
	found := d.all(inst)
	if len(found) == 0 {
		return nil
	}
	args := found[len(found)-1]
	if i := strings.Index(args, "["); i >= 0 {
		var out []string
		if json.Unmarshal([]byte(args[i:]), &out) == nil {
			return out
		}
	}
	return nil
}

// stack is everything the topology check reads.
type stack struct {
	project    *types.Project
	config     proxyConfig
	dockerfile dockerfile
	spamd      dockerfile
}

func loadStack(t *testing.T) stack {
	t.Helper()
	p, err := loadCompose(t, readFile(t, composePath))
	if err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	var cfg proxyConfig
	if err := yaml.Unmarshal(readFile(t, configPath), &cfg); err != nil {
		t.Fatalf("config.yaml: %v", err)
	}
	return stack{p, cfg, parseDockerfile(readFile(t, dockerfilePath)), parseDockerfile(readFile(t, spamdDockerfile))}
}

func port(hostport string) int {
	_, p, err := net.SplitHostPort(hostport)
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		return -1
	}
	return n
}

// check returns every way in which the stack is not wired as its files
// say; nil when it is.
func (s stack) check() []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	proxy, ok := s.project.Services[proxyService]
	if !ok {
		return []string{"no pop3proxy service"}
	}

	// Ports: only the proxy publishes, and only the ports it listens on.
	listening := map[uint32]string{}
	for key, addr := range map[string]string{"listen": s.config.Listen, "listen_tls": s.config.ListenTLS} {
		if addr != "" {
			listening[uint32(port(addr))] = key
		}
	}
	if len(listening) == 0 {
		bad("config.yaml has no listener")
	}
	for name, svc := range s.project.Services {
		if name != proxyService && len(svc.Ports) > 0 {
			bad("%s publishes ports %v: only pop3proxy's ports may be reachable from outside the stack", name, svc.Ports)
		}
	}
	if len(proxy.Ports) == 0 {
		bad("pop3proxy publishes no port")
	}
	for _, p := range proxy.Ports {
		if _, ok := listening[p.Target]; !ok {
			bad("pop3proxy publishes container port %d, where config.yaml does not listen (%v)", p.Target, listening)
		}
		// Without a certificate passwords travel in clear: the port must
		// stay on the host's loopback.
		if s.config.TLS.Cert == "" {
			if ip := net.ParseIP(p.HostIP); ip == nil || !ip.IsLoopback() {
				bad("pop3proxy publishes %d on %q without tls.cert in config.yaml: publish it on 127.0.0.1 only", p.Target, p.HostIP)
			}
		}
	}
	exposed := map[string]bool{}
	for _, e := range s.dockerfile.all("EXPOSE") {
		for _, p := range strings.Fields(e) {
			exposed[strings.TrimSuffix(p, "/tcp")] = true
		}
	}
	for p, key := range listening {
		if !exposed[strconv.Itoa(int(p))] {
			bad("Dockerfile does not EXPOSE %d (config.yaml %s)", p, key)
		}
	}

	// Start order: the proxy waits for healthy scanners, and every
	// scanner has a health check to wait for.
	for name := range scannerPorts {
		dep, ok := proxy.DependsOn[name]
		if !ok || dep.Condition != types.ServiceConditionHealthy {
			bad("pop3proxy does not depend on %s with condition service_healthy", name)
		}
		svc, ok := s.project.Services[name]
		if !ok {
			bad("no %s service", name)
			continue
		}
		if svc.HealthCheck == nil || svc.HealthCheck.Disable || len(svc.HealthCheck.Test) < 2 {
			bad("%s has no health check", name)
		}
	}

	// Filters reach the scanners by service name, on the port each
	// listens on.
	addressed := map[string]bool{}
	for i, f := range s.config.Filters {
		addr, _ := f["address"].(string)
		if addr == "" {
			continue
		}
		u, err := url.Parse(addr)
		if err != nil || u.Scheme != "tcp" {
			bad("filters[%d].address %q: want tcp://service:port", i, addr)
			continue
		}
		want, ok := scannerPorts[u.Hostname()]
		if _, svc := s.project.Services[u.Hostname()]; !ok || !svc {
			bad("filters[%d].address %q names no scanner service of compose.yaml", i, addr)
			continue
		}
		if got := port(u.Host); got != want {
			bad("filters[%d].address %q: %s listens on %d", i, addr, u.Hostname(), want)
		}
		addressed[u.Hostname()] = true
	}
	for name := range scannerPorts {
		if !addressed[name] {
			bad("no filter in config.yaml uses the %s service", name)
		}
	}
	spamdPort := strconv.Itoa(scannerPorts["spamassassin"])
	if cmd := strings.Join(s.spamd.execForm("CMD"), " "); !strings.Contains(cmd, "--listen=0.0.0.0:"+spamdPort) {
		bad("spamassassin/Dockerfile's spamd does not listen on 0.0.0.0:%s: %q", spamdPort, cmd)
	}
	if hc := s.project.Services["spamassassin"].HealthCheck; hc != nil && !slices.Contains(hc.Test, spamdPort) {
		bad("spamassassin's health check %v does not ask port %s", hc.Test, spamdPort)
	}
	if hc := s.spamd.execForm("HEALTHCHECK"); !slices.Contains(hc, spamdPort) {
		bad("spamassassin/Dockerfile's HEALTHCHECK %v does not ask port %s", hc, spamdPort)
	}

	// The configuration the proxy reads is config.yaml, read-only.
	configMounted := false
	var writable []string
	for _, v := range proxy.Volumes {
		if v.Target == proxyConfigTarget {
			configMounted = v.Type == types.VolumeTypeBind && filepath.Base(v.Source) == "config.yaml" && v.ReadOnly
		}
		if !v.ReadOnly {
			writable = append(writable, v.Target)
		}
	}
	if !configMounted {
		bad("pop3proxy does not mount config.yaml read-only at %s", proxyConfigTarget)
	}
	if cp := s.dockerfile.all("COPY"); !slices.Contains(cp, "docker/config.yaml "+proxyConfigTarget) {
		bad("Dockerfile does not copy docker/config.yaml to %s as the default: %q", proxyConfigTarget, cp)
	}
	// The root file system is read-only: what the proxy writes must be
	// on a writable volume.
	if !proxy.ReadOnly {
		bad("pop3proxy's root file system is not read_only")
	}
	dirs := map[string]string{"spool_dir": s.config.SpoolDir}
	for i, f := range s.config.Filters {
		if q, _ := f["quarantine_dir"].(string); q != "" {
			dirs[fmt.Sprintf("filters[%d].quarantine_dir", i)] = q
		}
	}
	for key, dir := range dirs {
		if !slices.ContainsFunc(writable, func(target string) bool { return dir == target || strings.HasPrefix(dir, target+"/") }) {
			bad("config.yaml %s %q is on no writable volume of pop3proxy (%v)", key, dir, writable)
		}
	}

	// The health check: the binary probes metrics.listen, the same in
	// the image and in compose.yaml.
	image := s.dockerfile.execForm("HEALTHCHECK")
	if proxy.HealthCheck == nil || !slices.Equal([]string(proxy.HealthCheck.Test), append([]string{"CMD"}, image...)) {
		bad("pop3proxy's health check in compose.yaml %v is not the Dockerfile's %v", proxy.HealthCheck, image)
	}
	if len(image) != 3 || image[0] != "/pop3proxy" || image[1] != "-probe" {
		bad("Dockerfile HEALTHCHECK %v: want /pop3proxy -probe URL", image)
	} else if u, err := url.Parse(image[2]); err != nil || port(u.Host) != port(s.config.Metrics.Listen) || u.Path != "/healthz" {
		bad("HEALTHCHECK probes %q, config.yaml's metrics.listen is %q", image[2], s.config.Metrics.Listen)
	}

	// What compose builds exists.
	for name, svc := range s.project.Services {
		if svc.Build == nil {
			continue
		}
		df := svc.Build.Dockerfile
		if df == "" {
			df = "Dockerfile"
		}
		if _, err := os.Stat(filepath.Join(svc.Build.Context, df)); err != nil {
			bad("%s builds %s in %s: %v", name, df, svc.Build.Context, err)
		}
	}
	if b := proxy.Build; b != nil {
		if _, err := os.Stat(filepath.Join(b.Context, "go.mod")); err != nil {
			bad("pop3proxy's build context %s is not the module root", b.Context)
		}
	}
	// clamd's signatures survive the container.
	if !slices.ContainsFunc(s.project.Services["clamav"].Volumes, func(v types.ServiceVolumeConfig) bool {
		_, declared := s.project.Volumes[v.Source]
		return v.Type == types.VolumeTypeVolume && declared && v.Target == "/var/lib/clamav"
	}) {
		bad("clamav's signatures (/var/lib/clamav) are not in a named volume")
	}
	return problems
}

// TestComposeTopology: compose.yaml, config.yaml and the Dockerfiles agree
// (ports, service names, health checks, volumes).
func TestComposeTopology(t *testing.T) {
	for _, p := range loadStack(t).check() {
		t.Error(p)
	}
}

// The topology check finds what it is there for.
func TestComposeTopologyCatchesMistakes(t *testing.T) {
	for name, spoil := range map[string]func(s *stack){
		"scanner published": func(s *stack) {
			svc := s.project.Services["clamav"]
			svc.Ports = []types.ServicePortConfig{{Target: 3310, Published: "3310"}}
			s.project.Services["clamav"] = svc
		},
		"proxy on every address without TLS": func(s *stack) {
			svc := s.project.Services[proxyService]
			svc.Ports[0].HostIP = ""
			s.project.Services[proxyService] = svc
		},
		"port not listened on": func(s *stack) { s.config.Listen = "0.0.0.0:2110" },
		"no healthy wait": func(s *stack) {
			svc := s.project.Services[proxyService]
			delete(svc.DependsOn, "spamassassin")
			s.project.Services[proxyService] = svc
		},
		"wrong scanner port": func(s *stack) { s.config.Filters[0]["address"] = "tcp://clamav:3311" },
		"scanner by address": func(s *stack) { s.config.Filters[1]["address"] = "tcp://127.0.0.1:783" },
		"quarantine in root": func(s *stack) { s.config.Filters[0]["quarantine_dir"] = "/quarantine" },
		"probe elsewhere":    func(s *stack) { s.config.Metrics.Listen = "0.0.0.0:9111" },
		"writable root": func(s *stack) {
			svc := s.project.Services[proxyService]
			svc.ReadOnly = false
			s.project.Services[proxyService] = svc
		},
	} {
		s := loadStack(t)
		spoil(&s)
		if len(s.check()) == 0 {
			t.Errorf("%s: not noticed", name)
		}
	}
}
