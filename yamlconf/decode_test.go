package yamlconf_test

import (
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/pop3proxy/pop3proxy/yamlconf"
)

type inner struct {
	Size yamlconf.ByteSize `yaml:"size"`
}

type outer struct {
	Timeout yamlconf.Duration `yaml:"timeout"`
	Name    string            `yaml:"name"`
	Items   []inner           `yaml:"items"`
}

func decode(t *testing.T, doc string) (outer, []error) {
	t.Helper()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(doc), &n); err != nil {
		t.Fatal(err)
	}
	var o outer
	return o, yamlconf.DecodeStrict(&n, &o, "")
}

func TestDecodeStrictValues(t *testing.T) {
	o, errs := decode(t, "timeout: 1m30s\nname: x\nitems:\n  - size: 10MiB\n  - size: 2KB\n")
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if o.Timeout.D() != 90*time.Second || o.Name != "x" || len(o.Items) != 2 ||
		o.Items[0].Size != 10<<20 || o.Items[1].Size != 2000 {
		t.Fatalf("decoded %+v", o)
	}
}

// Every problem comes back at once, each with its key path and line.
func TestDecodeStrictReportsEveryProblem(t *testing.T) {
	_, errs := decode(t, "timeout: soon\nnmae: x\nitems:\n  - size: -3\n  - sise: 1\n")
	want := []string{
		"line 1: timeout: invalid duration",
		"line 2: nmae: unknown key (valid keys: timeout, name, items)",
		"line 4: items[0].size: invalid size",
		"line 5: items[1].sise: unknown key (valid keys: size)",
	}
	if len(errs) != len(want) {
		t.Fatalf("got %d errors, want %d: %v", len(errs), len(want), errs)
	}
	for i, w := range want {
		if !strings.HasPrefix(errs[i].Error(), w) {
			t.Errorf("error %d = %q, want prefix %q", i, errs[i], w)
		}
	}
}

func TestParseByteSize(t *testing.T) {
	for in, want := range map[string]yamlconf.ByteSize{
		"0": 0, "512": 512, "512B": 512, "1K": 1024, "1KiB": 1024, "1KB": 1000,
		"10MiB": 10 << 20, "10MB": 10e6, "1G": 1 << 30, " 2 MiB ": 2 << 20, "3mib": 3 << 20,
	} {
		got, err := yamlconf.ParseByteSize(in)
		if err != nil || got != want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "1.5MiB", "MiB", "10XB", "99999999999GiB"} {
		if got, err := yamlconf.ParseByteSize(in); err == nil {
			t.Errorf("ParseByteSize(%q) = %d, want an error", in, got)
		}
	}
}
