package oslo

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseTransportURL(t *testing.T) {
	tests := []struct {
		name string
		url  string
		want []string // amqp091 URIs
		err  string
	}{
		{"oslo default", "", []string{"amqp://localhost/"}, ""},
		{"no host", "rabbit://", []string{"amqp://localhost/"}, ""},
		{"neutron.conf style", "rabbit://openstack:secret@10.0.0.5:5672/",
			[]string{"amqp://openstack:secret@10.0.0.5/"}, ""},
		{"default port", "rabbit://guest:guest@ctl", []string{"amqp://ctl/"}, ""},
		{"explicit root vhost", "rabbit://u:p@h:5673//", []string{"amqp://u:p@h:5673/"}, ""},
		{"named vhost", "rabbit://u:p@h/openstack", []string{"amqp://u:p@h/openstack"}, ""},
		{"several hosts", "rabbit://u1:p1@h1:5672,u2:p2@h2:5673/vh",
			[]string{"amqp://u1:p1@h1/vh", "amqp://u2:p2@h2:5673/vh"}, ""},
		{"escaped password", "rabbit://user:p%40ss%2Fw%3Ad@h:5672/",
			[]string{"amqp://user:p%40ss%2Fw%3Ad@h/"}, ""},
		{"ipv6 hosts", "rabbit://u:p@[::1]:5672,u:p@[fd00::2]/",
			[]string{"amqp://u:p@[::1]/", "amqp://u:p@[fd00::2]/"}, ""},
		{"ssl in query", "rabbit://u:p@h:5671/?ssl=1", []string{"amqps://u:p@h/"}, ""},
		{"unsupported driver", "fake://", nil, `transport "fake" is not supported`},
		{"no scheme", "guest@localhost", nil, "no scheme"},
		{"bad port", "rabbit://h:port/", nil, "bad port"},
		{"unclosed ipv6", "rabbit://[::1/", nil, "invalid IPv6"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tu, err := ParseTransportURL(tt.url)
			var got []string
			if err == nil {
				uris, err2 := tu.AMQPURIs(false)
				err = err2
				for _, u := range uris {
					got = append(got, u.String())
				}
			}
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseTransportURLKeepsCredentialsPerHost(t *testing.T) {
	tu, err := ParseTransportURL("rabbit://a:b@h1:1,h2:2/v?heartbeat_timeout_threshold=10")
	if err != nil {
		t.Fatal(err)
	}
	want := []TransportHost{{Hostname: "h1", Port: 1, Username: "a", Password: "b"}, {Hostname: "h2", Port: 2}}
	if !reflect.DeepEqual(tu.Hosts, want) || tu.VirtualHost != "v" || tu.Query["heartbeat_timeout_threshold"] != "10" {
		t.Errorf("parsed %+v", tu)
	}
	var c Config
	if err := tu.applyQuery(&c); err != nil || c.HeartbeatTimeout != 10*time.Second {
		t.Errorf("query override: %v, %v", c.HeartbeatTimeout, err)
	}
}

func TestLoadConfigReadsNeutronConf(t *testing.T) {
	dir := t.TempDir()
	main := filepath.Join(dir, "neutron.conf")
	over := filepath.Join(dir, "override.conf")
	os.WriteFile(main, []byte(`[DEFAULT]
# comment
transport_url = rabbit://openstack:pa#ss;word@ctl:5672/
control_exchange = neutron
rpc_response_timeout = 90
amqp_auto_delete = true

[oslo_messaging_rabbit]
heartbeat_timeout_threshold = 30
amqp_durable_queues = True
rabbit_retry_backoff = 3
`), 0o600)
	os.WriteFile(over, []byte(`[oslo_messaging_rabbit]
amqp_auto_delete = false
rabbit_qos_prefetch_count = 5
`), 0o600)
	c, err := LoadConfig(main, over)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{TransportURL: "rabbit://openstack:pa#ss;word@ctl:5672/", ControlExchange: "neutron",
		RPCResponseTimeout: 90 * time.Second, HeartbeatTimeout: 30 * time.Second, DurableQueues: true,
		AutoDelete: false, RetryBackoff: 3 * time.Second, PrefetchCount: 5}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got  %+v\nwant %+v", c, want)
	}
	if _, err := LoadConfig(filepath.Join(dir, "missing.conf")); err == nil {
		t.Error("missing file accepted")
	}
	os.WriteFile(main, []byte("[oslo_messaging_rabbit]\namqp_durable_queues = maybe\n"), 0o600)
	if _, err := LoadConfig(main); err == nil || !strings.Contains(err.Error(), "amqp_durable_queues") {
		t.Errorf("bad boolean: %v", err)
	}
}

func TestConfigDefaultsAreOslos(t *testing.T) {
	c := Config{}.withDefaults()
	if c.ControlExchange != "neutron" || c.HeartbeatTimeout != 60*time.Second ||
		c.TransientQueuesTTL != 1800*time.Second || c.RPCResponseTimeout != 60*time.Second ||
		c.MissingConsumerRetryTimeout != 60*time.Second || c.ExecutorPoolSize != 64 {
		t.Errorf("defaults %+v", c)
	}
	tr := &Transport{cfg: c}
	if args := tr.queueArgs(true); args["x-expires"] != int32(1800000) || len(args) != 1 {
		t.Errorf("transient queue args %v", args)
	}
	if args := tr.queueArgs(false); args != nil {
		t.Errorf("topic queue args %v, want none", args)
	}
	if e := tr.topicExchange(""); e != (exchangeSpec{name: "neutron", kind: "topic"}) {
		t.Errorf("topic exchange %+v", e)
	}
	if e := fanoutExchange("l3_agent"); e != (exchangeSpec{name: "l3_agent_fanout", kind: "fanout", autoDelete: true}) {
		t.Errorf("fanout exchange %+v", e)
	}
	got := []time.Duration{tr.backoff(0), tr.backoff(1), tr.backoff(2), tr.backoff(20)}
	if want := []time.Duration{time.Second, 3 * time.Second, 5 * time.Second, 30 * time.Second}; !reflect.DeepEqual(got, want) {
		t.Errorf("backoff %v, want %v", got, want)
	}
}
