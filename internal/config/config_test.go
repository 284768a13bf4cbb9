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

func TestUnknownOptionsInFileAreIgnoredAndListed(t *testing.T) {
	file := filepath.Join(t.TempDir(), "neutron.conf")
	_ = os.WriteFile(file, []byte("[DEFAULT]\nl3_haa = true\ncore_plugin = ml2\n[nova]\npassword = x\n"), 0o600)
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	s := New(fs, []Option{{Name: "l3_ha", Default: "false"}})
	s.env = func(string) (string, bool) { return "", false }
	_ = fs.Parse([]string{"--config-file", file})
	v, err := s.Resolve()
	if err != nil {
		t.Fatalf("a neutron.conf with options l3ha does not read was refused: %v", err)
	}
	if got, want := strings.Join(v.Unknown(), " "), "default.core_plugin default.l3_haa nova.password"; got != want {
		t.Errorf("Unknown() = %q, want %q", got, want)
	}
	if v.String("l3_ha") != "false" {
		t.Errorf("l3_ha = %q", v.String("l3_ha"))
	}
}

func TestSectionedOptionsReadOnlyTheirSectionAndAliases(t *testing.T) {
	dir := t.TempDir()
	first, second := filepath.Join(dir, "neutron.conf"), filepath.Join(dir, "override.conf")
	_ = os.WriteFile(first, []byte("[DEFAULT]\nbind_port = 9696\n[nova]\nauth_url = http://nova\npassword = not#this\n[keystone_authtoken]\nauth_url = http://keystone:5000\npassword = se#cret ; kept\n[database]\nconnection = postgresql://u@h/db\n"), 0o600)
	_ = os.WriteFile(second, []byte("[DEFAULT]\nbind_port = 9797\n"), 0o600)
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	s := New(fs, []Option{
		{Name: "auth_url", Section: "keystone_authtoken"},
		{Name: "password", Section: "keystone_authtoken"},
		{Name: "database", Aliases: []string{"database.connection"}},
		{Name: "bind_port", Default: "9696"},
	})
	s.env = func(k string) (string, bool) {
		return "", false
	}
	if err := fs.Parse([]string{"--config-file", first, "--config-file", second}); err != nil {
		t.Fatal(err)
	}
	v, err := s.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{
		"keystone_authtoken.auth_url": "http://keystone:5000", "keystone_authtoken.password": "se#cret ; kept",
		"database": "postgresql://u@h/db", "bind_port": "9797",
	} {
		if got := v.String(key); got != want {
			t.Errorf("%s = %q, want %q", key, got, want)
		}
	}
	if got, want := strings.Join(v.Unknown(), " "), "nova.auth_url nova.password"; got != want {
		t.Errorf("Unknown() = %q, want %q", got, want)
	}
	if FlagName("keystone_authtoken.auth_url") != "keystone-authtoken-auth-url" || EnvName("keystone_authtoken.auth_url") != "L3HA_KEYSTONE_AUTHTOKEN_AUTH_URL" {
		t.Errorf("flag/env names: %s %s", FlagName("keystone_authtoken.auth_url"), EnvName("keystone_authtoken.auth_url"))
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// oslo.config has no backslash continuation lines: a password ending in a
// backslash is kept as it is, and the next line is an option of its own.
func TestTrailingBackslashIsPartOfTheValue(t *testing.T) {
	file := filepath.Join(t.TempDir(), "neutron.conf")
	if err := os.WriteFile(file, []byte("[keystone_authtoken]\npassword = se\\cret\\\nusername = neutron\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	s := New(fs, []Option{{Name: "password", Section: "keystone_authtoken"}, {Name: "username", Section: "keystone_authtoken"}})
	s.env = func(string) (string, bool) { return "", false }
	if err := fs.Parse([]string{"--config-file", file}); err != nil {
		t.Fatal(err)
	}
	v, err := s.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := v.String("keystone_authtoken.password"), `se\cret\`; got != want {
		t.Errorf("password = %q, want %q", got, want)
	}
	if got := v.String("keystone_authtoken.username"); got != "neutron" {
		t.Errorf("username = %q, want neutron (swallowed by the line before?)", got)
	}
}

// An option that sets part of another (bind_host of bind) wins only over a
// source of no higher precedence: --bind beats a file's bind_host.
func TestOutranksFollowsPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "neutron.conf")
	if err := os.WriteFile(file, []byte("[DEFAULT]\nbind_host = 0.0.0.0\nbind_port = 9696\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	opts := []Option{{Name: "bind", Default: "127.0.0.1:9696"}, {Name: "bind_host"}, {Name: "bind_port"}}
	for _, tc := range []struct {
		name       string
		args       []string
		env        map[string]string
		host, port bool // want bind_host / bind_port to outrank bind
	}{
		{"bind left at its default", nil, nil, true, true},
		{"bind flag over the file", []string{"--bind", "127.0.0.1:19696"}, nil, false, false},
		{"bind environment over the file", nil, map[string]string{"L3HA_BIND": "127.0.0.1:19696"}, false, false},
		{"bind and bind_host flags", []string{"--bind", "127.0.0.1:19696", "--bind-host", "10.0.0.1"}, nil, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
			s := New(fs, opts)
			s.env = func(k string) (string, bool) { val, ok := tc.env[k]; return val, ok }
			if err := fs.Parse(append([]string{"--config-file", file}, tc.args...)); err != nil {
				t.Fatal(err)
			}
			v, err := s.Resolve()
			if err != nil {
				t.Fatal(err)
			}
			if got := v.Outranks("bind_host", "bind"); got != tc.host {
				t.Errorf("bind_host outranks bind = %v, want %v", got, tc.host)
			}
			if got := v.Outranks("bind_port", "bind"); got != tc.port {
				t.Errorf("bind_port outranks bind = %v, want %v", got, tc.port)
			}
		})
	}
}

// --config-dir reads the directory's *.conf files in name order after the
// --config-file files, as oslo.config does; later values win, other files
// in the directory are not read, and a missing directory is an error.
func TestConfigDirFilesFollowConfigFilesInNameOrder(t *testing.T) {
	dir := t.TempDir()
	confd := filepath.Join(dir, "conf.d")
	if err := os.Mkdir(confd, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{
		"neutron.conf":            "[DEFAULT]\nhost = from-file\nstate_path = /a\n",
		"conf.d/20-host.conf":     "[DEFAULT]\nhost = from-dir-20\n",
		"conf.d/10-host.conf":     "[DEFAULT]\nhost = from-dir-10\nstate_path = /b\n",
		"conf.d/99-ignored.conf~": "[DEFAULT]\nhost = backup-file\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	opts := []Option{{Section: "default", Name: "host", Flag: "host"}, {Section: "default", Name: "state_path", Flag: "state-path"}}
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	s := New(fs, opts)
	s.env = func(string) (string, bool) { return "", false }
	if err := fs.Parse([]string{"--config-file", filepath.Join(dir, "neutron.conf"), "--config-dir", confd}); err != nil {
		t.Fatal(err)
	}
	v, err := s.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	if got := v.String("default.host"); got != "from-dir-20" {
		t.Errorf("host = %q, want the last file's from-dir-20", got)
	}
	if got := v.String("default.state_path"); got != "/b" {
		t.Errorf("state_path = %q, want /b", got)
	}

	fs = pflag.NewFlagSet("t", pflag.ContinueOnError)
	s = New(fs, opts)
	if err := fs.Parse([]string{"--config-dir", filepath.Join(dir, "nope")}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Resolve(); err == nil || !strings.Contains(err.Error(), "config dir") {
		t.Errorf("missing config dir: err = %v", err)
	}
}
