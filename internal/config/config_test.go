package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func TestPrecedenceIsFlagThenEnvironmentThenFileThenDefault(t *testing.T) {
	file := filepath.Join(t.TempDir(), "l3ha.ini")
	if err := os.WriteFile(file, []byte("[DEFAULT]\nagent_down_time = 30\nmax_l3_agents_per_router = 4\nl3_ha = true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	opts := []Option{{Name: "agent_down_time", Default: "75"}, {Name: "max_l3_agents_per_router", Default: "3"}, {Name: "l3_ha", Default: "false"}, {Name: "bind", Default: "127.0.0.1:9696"}}
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	s := New(fs, opts)
	s.env = func(k string) (string, bool) {
		if k == "L3HA_MAX_L3_AGENTS_PER_ROUTER" || k == "L3HA_AGENT_DOWN_TIME" {
			return "2", true
		}
		return "", false
	}
	if err := fs.Parse([]string{"--config-file", file, "--agent-down-time", "5"}); err != nil {
		t.Fatal(err)
	}
	v, err := s.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"agent_down_time": "5", "max_l3_agents_per_router": "2", "l3_ha": "true", "bind": "127.0.0.1:9696"} {
		if got := v.String(name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
}

func TestInvalidValuesAreReportedTogether(t *testing.T) {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	s := New(fs, []Option{{Name: "l3_ha_net_cidr", Default: "10.0.0.1/8"}, {Name: "agent_down_time", Default: "soon"}})
	s.env = func(string) (string, bool) { return "", false }
	v, err := s.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	v.NetworkCIDR("l3_ha_net_cidr")
	v.Seconds("agent_down_time")
	err = v.Err()
	if err == nil {
		t.Fatal("10.0.0.1/8 and 'soon' accepted")
	}
	for _, want := range []string{"l3_ha_net_cidr", "10.0.0.0/8", "agent_down_time"} {
		if !contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestUnknownOptionInFileIsAnError(t *testing.T) {
	file := filepath.Join(t.TempDir(), "l3ha.ini")
	_ = os.WriteFile(file, []byte("[DEFAULT]\nl3_haa = true\n"), 0o600)
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	s := New(fs, []Option{{Name: "l3_ha", Default: "false"}})
	s.env = func(string) (string, bool) { return "", false }
	_ = fs.Parse([]string{"--config-file", file})
	if _, err := s.Resolve(); err == nil || !contains(err.Error(), "l3_haa") {
		t.Fatalf("misspelt option not reported: %v", err)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
