package oslo

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"gopkg.in/ini.v1"
)

// DefaultControlExchange is Neutron's control_exchange.
const DefaultControlExchange = "neutron"

// Config holds the oslo.messaging options that matter on the wire. Zero
// values mean oslo's defaults.
type Config struct {
	// TransportURL is [DEFAULT] transport_url; "" means oslo's default
	// "rabbit://" (guest:guest@localhost:5672, vhost "/").
	TransportURL string
	// ControlExchange is [DEFAULT] control_exchange ("neutron").
	ControlExchange string
	// RPCResponseTimeout bounds calls whose context has no deadline
	// ([DEFAULT] rpc_response_timeout, 60 s).
	RPCResponseTimeout time.Duration
	// ExecutorPoolSize bounds concurrently running handlers per server
	// ([DEFAULT] executor_thread_pool_size, 64).
	ExecutorPoolSize int

	// [oslo_messaging_rabbit]; the transport URL's query may override them.
	HeartbeatTimeout            time.Duration // heartbeat_timeout_threshold (60 s)
	DurableQueues               bool          // amqp_durable_queues
	AutoDelete                  bool          // amqp_auto_delete
	HAQueues                    bool          // rabbit_ha_queues (x-ha-policy: all)
	TransientQueuesTTL          time.Duration // rabbit_transient_queues_ttl (1800 s)
	PrefetchCount               int           // rabbit_qos_prefetch_count (0: unlimited)
	RetryInterval               time.Duration // rabbit_retry_interval (1 s)
	RetryBackoff                time.Duration // rabbit_retry_backoff (2 s)
	RetryMax                    time.Duration // rabbit_interval_max (30 s)
	MissingConsumerRetryTimeout time.Duration // kombu_missing_consumer_retry_timeout (60 s)
	ReconnectDelay              time.Duration // kombu_reconnect_delay (1 s): consumer redeclare delay
	SSL                         bool          // ssl

	// ConnectionName is shown by RabbitMQ (connection_name); default
	// "l3ha:<pid>:<uuid>".
	ConnectionName string
	// Log receives the transport's log lines; nil discards them.
	Log *slog.Logger
}

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if c.ControlExchange == "" {
		c.ControlExchange = DefaultControlExchange
	}
	def(&c.RPCResponseTimeout, 60*time.Second)
	def(&c.HeartbeatTimeout, 60*time.Second)
	def(&c.TransientQueuesTTL, 1800*time.Second)
	def(&c.RetryInterval, time.Second)
	def(&c.RetryBackoff, 2*time.Second)
	def(&c.RetryMax, 30*time.Second)
	def(&c.MissingConsumerRetryTimeout, 60*time.Second)
	def(&c.ReconnectDelay, time.Second)
	if c.ExecutorPoolSize <= 0 {
		c.ExecutorPoolSize = 64
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return c
}

// option is one oslo option this package understands: where oslo.config
// looks for it and how to set it.
type option struct {
	name   string
	groups []string // the first is the current group, others deprecated ones
	set    func(c *Config, v string) error
}

func seconds(dst func(*Config) *time.Duration) func(*Config, string) error {
	return func(c *Config, v string) error {
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			return err
		}
		*dst(c) = time.Duration(f * float64(time.Second))
		return nil
	}
}

func boolean(dst func(*Config) *bool) func(*Config, string) error {
	return func(c *Config, v string) error {
		switch strings.ToLower(strings.TrimSpace(v)) {
		case "true", "1", "on", "yes":
			*dst(c) = true
		case "false", "0", "off", "no":
			*dst(c) = false
		default:
			return fmt.Errorf("not a boolean: %q", v)
		}
		return nil
	}
}

func integer(dst func(*Config) *int) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return err
		}
		*dst(c) = n
		return nil
	}
}

const rabbitGroup = "oslo_messaging_rabbit"

var options = []option{
	{"transport_url", []string{"DEFAULT"}, func(c *Config, v string) error { c.TransportURL = strings.TrimSpace(v); return nil }},
	{"control_exchange", []string{"DEFAULT"}, func(c *Config, v string) error { c.ControlExchange = strings.TrimSpace(v); return nil }},
	{"rpc_response_timeout", []string{"DEFAULT"}, seconds(func(c *Config) *time.Duration { return &c.RPCResponseTimeout })},
	{"executor_thread_pool_size", []string{"DEFAULT"}, integer(func(c *Config) *int { return &c.ExecutorPoolSize })},
	{"heartbeat_timeout_threshold", []string{rabbitGroup}, seconds(func(c *Config) *time.Duration { return &c.HeartbeatTimeout })},
	{"amqp_durable_queues", []string{rabbitGroup}, boolean(func(c *Config) *bool { return &c.DurableQueues })},
	{"amqp_auto_delete", []string{rabbitGroup, "DEFAULT"}, boolean(func(c *Config) *bool { return &c.AutoDelete })},
	{"rabbit_ha_queues", []string{rabbitGroup, "DEFAULT"}, boolean(func(c *Config) *bool { return &c.HAQueues })},
	{"rabbit_transient_queues_ttl", []string{rabbitGroup}, seconds(func(c *Config) *time.Duration { return &c.TransientQueuesTTL })},
	{"rabbit_qos_prefetch_count", []string{rabbitGroup}, integer(func(c *Config) *int { return &c.PrefetchCount })},
	{"rabbit_retry_interval", []string{rabbitGroup}, seconds(func(c *Config) *time.Duration { return &c.RetryInterval })},
	{"rabbit_retry_backoff", []string{rabbitGroup, "DEFAULT"}, seconds(func(c *Config) *time.Duration { return &c.RetryBackoff })},
	{"rabbit_interval_max", []string{rabbitGroup}, seconds(func(c *Config) *time.Duration { return &c.RetryMax })},
	{"kombu_missing_consumer_retry_timeout", []string{rabbitGroup}, seconds(func(c *Config) *time.Duration { return &c.MissingConsumerRetryTimeout })},
	{"kombu_reconnect_delay", []string{rabbitGroup, "DEFAULT"}, seconds(func(c *Config) *time.Duration { return &c.ReconnectDelay })},
	{"ssl", []string{rabbitGroup}, boolean(func(c *Config) *bool { return &c.SSL })},
}

// LoadConfig reads the options above from oslo.config INI files (e.g.
// neutron.conf); later files override earlier ones, as with repeated
// --config-file. Options in the transport URL's query override the
// [oslo_messaging_rabbit] ones, as oslo.messaging does.
func LoadConfig(files ...string) (Config, error) {
	var c Config
	if len(files) == 0 {
		return c, nil
	}
	srcs := make([]any, len(files))
	for i, f := range files {
		srcs[i] = f
	}
	f, err := ini.LoadSources(ini.LoadOptions{
		IgnoreInlineComment:        true, // oslo.config has no inline comments
		AllowPythonMultilineValues: true,
		SkipUnrecognizableLines:    true,
	}, srcs[0], srcs[1:]...)
	if err != nil {
		return c, fmt.Errorf("oslo: reading %s: %w", strings.Join(files, ", "), err)
	}
	for _, o := range options {
		// The current group wins over deprecated ones.
		for i := len(o.groups) - 1; i >= 0; i-- {
			sec, err := f.GetSection(o.groups[i])
			if err != nil {
				continue
			}
			for _, k := range sec.Keys() { // own keys only, no DEFAULT fallback
				if k.Name() == o.name {
					if err := o.set(&c, k.Value()); err != nil {
						return c, fmt.Errorf("oslo: [%s] %s: %w", o.groups[i], o.name, err)
					}
				}
			}
		}
	}
	return c, nil
}

// TransportHost is one broker of a transport URL.
type TransportHost struct {
	Hostname string
	Port     int // 0: default
	Username string
	Password string
}

// TransportURL is a parsed oslo.messaging transport URL,
// driver://[user:pass@]host:port[,[userN:passN@]hostN:portN]/virtual_host?query.
type TransportURL struct {
	Transport   string
	Hosts       []TransportHost
	VirtualHost string // unescaped, without the leading "/"
	Query       map[string]string
}

// ParseTransportURL parses s the way oslo_messaging.TransportURL.parse does.
func ParseTransportURL(s string) (*TransportURL, error) {
	if s == "" {
		s = "rabbit://"
	}
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok || scheme == "" {
		return nil, errors.New("oslo: invalid transport URL: no scheme specified")
	}
	// The host list is split by hand: url.Parse rejects several hosts.
	netloc, tail := rest, ""
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		netloc, tail = rest[:i], rest[i:]
	}
	u, err := url.Parse("x://x" + tail)
	if err != nil {
		return nil, fmt.Errorf("oslo: invalid transport URL: %w", redactErr(err))
	}
	t := &TransportURL{Transport: strings.ToLower(scheme), Query: map[string]string{}}
	for k, vs := range u.Query() {
		t.Query[k] = strings.Join(vs, ",")
	}
	if strings.HasPrefix(u.Path, "/") {
		t.VirtualHost = u.Path[1:] // url.Parse has unescaped it
	}
	for _, h := range strings.Split(netloc, ",") {
		if h == "" {
			continue
		}
		var th TransportHost
		hostname := h
		if i := strings.LastIndex(h, "@"); i >= 0 {
			cred := h[:i]
			hostname = h[i+1:]
			user, pass, hasPass := strings.Cut(cred, ":")
			if th.Username, err = url.PathUnescape(user); err != nil {
				return nil, errors.New("oslo: invalid transport URL: bad escape in user name")
			}
			if hasPass {
				if th.Password, err = url.PathUnescape(pass); err != nil {
					return nil, errors.New("oslo: invalid transport URL: bad escape in password")
				}
			}
		}
		port := ""
		switch {
		case strings.HasPrefix(hostname, "["):
			end := strings.Index(hostname, "]")
			if end < 0 {
				return nil, errors.New("oslo: invalid transport URL: invalid IPv6 URL")
			}
			if rest := hostname[end:]; strings.Contains(rest, ":") {
				_, port, _ = strings.Cut(rest, ":")
			}
			hostname = hostname[1:end]
		case strings.Contains(hostname, ":"):
			hostname, port, _ = strings.Cut(hostname, ":")
		}
		if port != "" {
			p, err := strconv.Atoi(port)
			if err != nil || p <= 0 || p > 65535 {
				return nil, fmt.Errorf("oslo: invalid transport URL: bad port %q", port)
			}
			th.Port = p
		}
		th.Hostname = hostname
		t.Hosts = append(t.Hosts, th)
	}
	return t, nil
}

// AMQPURIs are the brokers to try, in order, as amqp091 URIs. A URL with
// no host means guest:guest@localhost:5672 (oslo's fallback); an empty
// virtual host means "/" (kombu's default).
func (t *TransportURL) AMQPURIs(ssl bool) ([]amqp.URI, error) {
	switch strings.TrimPrefix(t.Transport, "kombu+") {
	case "rabbit", "amqp":
	default:
		return nil, fmt.Errorf("oslo: transport %q is not supported (only rabbit)", t.Transport)
	}
	if v, ok := t.Query["ssl"]; ok {
		if err := boolean(func(c *Config) *bool { return &ssl })(nil, v); err != nil {
			return nil, fmt.Errorf("oslo: transport URL option ssl: %w", err)
		}
	}
	vhost := t.VirtualHost
	if vhost == "" {
		vhost = "/"
	}
	scheme, defPort := "amqp", 5672
	if ssl {
		scheme = "amqps"
	}
	hosts := t.Hosts
	if len(hosts) == 0 {
		hosts = []TransportHost{{Hostname: "localhost", Username: "guest", Password: "guest"}}
	}
	var out []amqp.URI
	for _, h := range hosts {
		port := h.Port
		if port == 0 {
			port = defPort // oslo uses 5672 even with ssl
		}
		host := h.Hostname
		if host == "" {
			host = "localhost"
		}
		out = append(out, amqp.URI{Scheme: scheme, Host: host, Port: port,
			Username: h.Username, Password: h.Password, Vhost: vhost})
	}
	return out, nil
}

// applyQuery applies [oslo_messaging_rabbit] overrides from the URL query.
func (t *TransportURL) applyQuery(c *Config) error {
	for _, o := range options {
		if o.groups[0] != rabbitGroup {
			continue
		}
		if v, ok := t.Query[o.name]; ok {
			if err := o.set(c, v); err != nil {
				return fmt.Errorf("oslo: transport URL option %s: %w", o.name, err)
			}
		}
	}
	return nil
}

// redactURI is u without its password, for logs.
func redactURI(u amqp.URI) string {
	vhost := u.Vhost
	if vhost == "/" {
		vhost = ""
	}
	return fmt.Sprintf("%s://%s:***@%s/%s", u.Scheme, u.Username,
		net.JoinHostPort(u.Host, strconv.Itoa(u.Port)), url.PathEscape(vhost))
}

// redactErr drops the URL (and so the password) from url.Parse's errors.
func redactErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
