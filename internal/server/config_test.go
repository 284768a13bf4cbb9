package server_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/l3ha/l3ha/internal/api"
	"github.com/l3ha/l3ha/internal/server"
)

// testHostToken is net1's credential in the agent tokens file of
// loadServerConfig.
const testHostToken = "net1-0123456789abcdef"

// loadServerConfig loads conf as a neutron.conf; @TOKENS@ in it names an
// agent tokens file giving net1 testHostToken.
func loadServerConfig(t *testing.T, conf string, args ...string) (*server.Config, error) {
	t.Helper()
	dir := t.TempDir()
	tokens := filepath.Join(dir, "agent-tokens")
	if err := os.WriteFile(tokens, []byte("net1 "+testHostToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "neutron.conf")
	conf = strings.ReplaceAll(conf, "@TOKENS@", tokens)
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	fs := pflag.NewFlagSet("server", pflag.ContinueOnError)
	set := server.RegisterFlags(fs)
	if err := fs.Parse(append([]string{"--config-file", path}, args...)); err != nil {
		t.Fatal(err)
	}
	return server.Load(set, nil)
}

// An operator's neutron.conf, as Debian ships and a deployment fills it in,
// configures the server by Neutron's names; what l3ha does not read is
// ignored, as oslo.config ignores it.
func TestServerReadsNeutronConf(t *testing.T) {
	dir := t.TempDir()
	cfg, err := loadServerConfig(t, `[DEFAULT]
core_plugin = ml2
service_plugins = router
auth_strategy = keystone
bind_host = 127.0.0.1
bind_port = 19696
l3_ha = True
max_l3_agents_per_router = 2
transport_url = rabbit://guest:guest@127.0.0.1:5672/
[l3ha]
agent_tokens_file = @TOKENS@
[database]
connection = sqlite:///`+dir+`/neutron.db
[keystone_authtoken]
www_authenticate_uri = http://keystone.example.com:5000
auth_url = http://127.0.0.1:5000
memcached_servers = 127.0.0.1:11211
auth_type = password
project_domain_name = Default
user_domain_name = Default
project_name = service
username = neutron
password = pw#with#hashes
token_cache_time = 60
[nova]
auth_url = http://127.0.0.1:5000
password = other
`)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Bind != "127.0.0.1:19696" || !cfg.DefaultHA || cfg.HA.MaxAgents != 2 {
		t.Errorf("bind %q l3_ha %v max %d", cfg.Bind, cfg.DefaultHA, cfg.HA.MaxAgents)
	}
	if host, ok := cfg.AgentCredentials.HostFor(testHostToken); !ok || host != "net1" {
		t.Errorf("agent credential %q acts for %q (%v), want net1", testHostToken, host, ok)
	}
	if want := "sqlite://" + dir + "/neutron.db"; cfg.Database != want {
		t.Errorf("database = %q, want %q", cfg.Database, want)
	}
	ka, ok := cfg.Auth.(api.KeystoneAuth)
	if !ok {
		t.Fatalf("auth = %T, want api.KeystoneAuth", cfg.Auth)
	}
	if got, want := ka.WWWAuthenticate(), `Keystone uri="http://keystone.example.com:5000"`; got != want {
		t.Errorf("WWW-Authenticate %q, want %q", got, want)
	}
}

func TestServerConfigErrorsAreClear(t *testing.T) {
	for _, tc := range []struct {
		name, conf string
		want       string
	}{
		{"keystone without service user", "[DEFAULT]\nauth_strategy = keystone\nagent_tokens_file = @TOKENS@\n[keystone_authtoken]\nauth_url = http://127.0.0.1:5000\n", "needs [keystone_authtoken] username, password, project_name"},
		{"keystone without auth_url", "[DEFAULT]\nauth_strategy = keystone\nagent_tokens_file = @TOKENS@\n[keystone_authtoken]\nusername = n\npassword = p\nproject_name = service\n", "auth_url"},
		{"auth_type other than password", "[DEFAULT]\nauth_strategy = keystone\nagent_tokens_file = @TOKENS@\n[keystone_authtoken]\nauth_type = v3oidcpassword\nauth_url = http://k\nusername = n\npassword = p\nproject_name = s\n", "auth_type"},
		{"token_cache_time not a number", "[DEFAULT]\nauth_strategy = keystone\nagent_tokens_file = @TOKENS@\n[keystone_authtoken]\nauth_url = http://k\nusername = n\npassword = p\nproject_name = s\ntoken_cache_time = long\n", "token_cache_time"},
		{"unknown strategy", "[DEFAULT]\nauth_strategy = ldap\nagent_tokens_file = @TOKENS@\n", `auth_strategy "ldap"`},
		{"mysql database", "[DEFAULT]\nagent_tokens_file = @TOKENS@\n[database]\nconnection = mysql+pymysql://neutron:pw@db/neutron\n", "not MySQL"},
		{"bad bind_port", "[DEFAULT]\nagent_tokens_file = @TOKENS@\nbind_port = http\n", "bind_port"},
		{"malformed file", "[DEFAULT\nagent_tokens_file = @TOKENS@\n", "reading config file"},
		// Neutron's default auth_strategy is keystone, l3ha's noauth: a
		// neutron.conf that leaves it out must not make everyone admin.
		{"keystone configured but auth_strategy left out", "[DEFAULT]\nagent_tokens_file = @TOKENS@\n[keystone_authtoken]\nauth_url = http://k:5000\nusername = n\npassword = p\nproject_name = s\n", "auth_strategy is not"},
		{"shared agent token", "[DEFAULT]\nagent_token = s3cretlongenough\n", "agent_token was removed"},
		{"no agent tokens", "[DEFAULT]\n", "agent_tokens_file is required"},
		{"tls_cert without tls_key", "[DEFAULT]\nagent_tokens_file = @TOKENS@\ntls_cert = /nonexistent.pem\n", "tls_cert and tls_key go together"},
		{"tls files missing", "[DEFAULT]\nagent_tokens_file = @TOKENS@\ntls_cert = /nonexistent.pem\ntls_key = /nonexistent.key\n", "reading TLS files"},
		{"agent tokens file missing", "[DEFAULT]\nagent_tokens_file = /nonexistent/agent-tokens\n", "reading agent tokens file"},
		{"database not a URL holding a password", "[DEFAULT]\nagent_tokens_file = @TOKENS@\n[database]\nconnection = host=db password=hunter2\n", "not a URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadServerConfig(t, tc.conf)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, tc.want)
			}
			if strings.Contains(fmtErr(err), "pw@") || strings.Contains(fmtErr(err), "hunter2") {
				t.Errorf("error shows a password: %v", err)
			}
		})
	}
}

func fmtErr(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// Flags win over files: --bind keeps its address even when the
// neutron.conf beside it says bind_host = 0.0.0.0.
func TestBindFlagWinsOverNeutronConfBindHost(t *testing.T) {
	conf := "[DEFAULT]\nagent_tokens_file = @TOKENS@\nbind_host = 0.0.0.0\nbind_port = 9797\n"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "0.0.0.0:9797"},
		{[]string{"--bind", "127.0.0.1:19696"}, "127.0.0.1:19696"},
		{[]string{"--bind", "127.0.0.1:19696", "--bind-host", "127.0.0.2"}, "127.0.0.2:19696"},
	} {
		cfg, err := loadServerConfig(t, conf, tc.args...)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Bind != tc.want {
			t.Errorf("%v: bind %q, want %q", tc.args, cfg.Bind, tc.want)
		}
	}
}

// keystonemiddleware's token_cache_time = -1 (no caching) is accepted.
func TestTokenCacheTimeMinusOneIsAccepted(t *testing.T) {
	_, err := loadServerConfig(t, "[DEFAULT]\nagent_tokens_file = @TOKENS@\nauth_strategy = keystone\n[keystone_authtoken]\nauth_url = http://k:5000\nusername = n\npassword = p\nproject_name = s\ntoken_cache_time = -1\n")
	if err != nil {
		t.Fatal(err)
	}
}
