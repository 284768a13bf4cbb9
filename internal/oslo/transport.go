package oslo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

var (
	// ErrClosed is returned by operations on a closed Transport.
	ErrClosed = errors.New("oslo: transport closed")
	// ErrConnectionLost is returned by a call whose connection to
	// RabbitMQ dropped before the reply came; the request may or may not
	// have been handled.
	ErrConnectionLost = errors.New("oslo: connection to RabbitMQ lost")
	// ErrTimeout is returned by a call that got no reply in time.
	ErrTimeout = errors.New("oslo: timed out waiting for a reply")
	// ErrUnroutable is returned when a mandatory publish (a reply) found
	// no queue.
	ErrUnroutable = errors.New("oslo: message unroutable (no such queue)")
)

// exchangeSpec describes an exchange; name "" is the default exchange,
// which is never declared.
type exchangeSpec struct {
	name, kind          string
	durable, autoDelete bool
}

// Transport is one managed AMQP connection shared by clients and servers.
type Transport struct {
	cfg  Config
	log  *slog.Logger
	uris []amqp.URI

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	done   chan struct{} // run loop ended

	mu        sync.Mutex
	sess      *session      // current connection, nil while disconnected
	ready     chan struct{} // closed once sess is usable
	lastErr   error
	connects  int
	consumers map[*consumer]struct{}
	subs      map[chan struct{}]struct{}
}

// session is one AMQP connection.
type session struct {
	gen  int
	uri  string // redacted
	conn *amqp.Connection
	dead chan struct{} // closed when conn is gone
	err  error         // why, valid after dead

	pubMu    sync.Mutex
	pub      *amqp.Channel
	returns  chan amqp.Return
	declared map[string]bool // exchanges declared on pub
}

// Dial parses cfg, connects to RabbitMQ and keeps the connection up until
// Close. It returns when the first connection is established, or with an
// error when ctx ends first.
func Dial(ctx context.Context, cfg Config) (*Transport, error) {
	tu, err := ParseTransportURL(cfg.TransportURL)
	if err != nil {
		return nil, err
	}
	if err := tu.applyQuery(&cfg); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	uris, err := tu.AMQPURIs(cfg.SSL)
	if err != nil {
		return nil, err
	}
	if cfg.ConnectionName == "" {
		cfg.ConnectionName = fmt.Sprintf("l3ha:%d:%s", os.Getpid(), newID())
	}
	if len(uris) > 1 { // oslo shuffles the hosts, then goes round-robin
		rand.Shuffle(len(uris), func(i, j int) { uris[i], uris[j] = uris[j], uris[i] })
	}
	t := &Transport{
		cfg: cfg, log: cfg.Log, uris: uris,
		done:      make(chan struct{}),
		ready:     make(chan struct{}),
		consumers: map[*consumer]struct{}{},
		subs:      map[chan struct{}]struct{}{},
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	go t.run()
	if _, err := t.waitSession(ctx); err != nil {
		t.mu.Lock()
		last := t.lastErr
		t.mu.Unlock()
		t.Close()
		if last != nil {
			return nil, fmt.Errorf("oslo: connecting to RabbitMQ: %w (last error: %v)", err, last)
		}
		return nil, fmt.Errorf("oslo: connecting to RabbitMQ: %w", err)
	}
	return t, nil
}

// Config is the effective configuration (defaults filled in).
func (t *Transport) Config() Config { return t.cfg }

// Close ends the connection and stops reconnecting. Clients and servers
// using t stop working.
func (t *Transport) Close() error {
	t.cancel()
	<-t.done
	return nil
}

// Connected reports whether a connection is currently up.
func (t *Transport) Connected() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	select {
	case <-t.ready:
		return t.sess != nil
	default:
		return false
	}
}

// NotifyReconnect returns a channel that receives a value (coalesced) each
// time the connection is re-established after a loss, once every consumer
// has been redeclared. The L3 agent resyncs when it fires. cancel stops
// the notifications.
func (t *Transport) NotifyReconnect() (ch <-chan struct{}, cancel func()) {
	c := make(chan struct{}, 1)
	t.mu.Lock()
	t.subs[c] = struct{}{}
	t.mu.Unlock()
	return c, func() {
		t.mu.Lock()
		delete(t.subs, c)
		t.mu.Unlock()
	}
}

// waitSession returns the current usable session, waiting for one.
func (t *Transport) waitSession(ctx context.Context) (*session, error) {
	for {
		t.mu.Lock()
		s, ready := t.sess, t.ready
		t.mu.Unlock()
		select {
		case <-ready:
			if s != nil {
				return s, nil
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.ctx.Done():
			return nil, ErrClosed
		}
	}
}

func (t *Transport) run() {
	defer close(t.done)
	attempt := 0
	next := 0 // round-robin over the hosts
	for gen := 1; ; {
		s, err := t.connect(gen, t.uris[next%len(t.uris)])
		next++
		if err != nil {
			if t.ctx.Err() != nil {
				return
			}
			delay := t.backoff(attempt)
			t.mu.Lock()
			t.lastErr = err
			t.mu.Unlock()
			t.log.Warn("oslo: connecting to RabbitMQ failed", "url", redactURI(t.uris[(next-1)%len(t.uris)]),
				"attempt", attempt+1, "retry_in", delay, "err", err)
			select {
			case <-time.After(delay):
			case <-t.ctx.Done():
				return
			}
			attempt++
			continue
		}
		attempt = 0
		t.mu.Lock()
		t.sess = s
		cons := make([]*consumer, 0, len(t.consumers))
		for c := range t.consumers {
			cons = append(cons, c)
		}
		t.mu.Unlock()
		for _, c := range cons {
			if err := c.ensure(s); err != nil {
				t.log.Error("oslo: redeclaring consumer failed, will retry", "queue", c.spec.queue, "err", err)
			}
		}
		t.mu.Lock()
		close(t.ready)
		t.connects++
		reconnect := t.connects > 1
		for c := range t.subs {
			if reconnect {
				select {
				case c <- struct{}{}:
				default:
				}
			}
		}
		t.mu.Unlock()
		if reconnect {
			t.log.Info("oslo: reconnected to RabbitMQ", "url", s.uri, "consumers", len(cons), "generation", gen)
		} else {
			t.log.Info("oslo: connected to RabbitMQ", "url", s.uri)
		}

		select {
		case <-s.dead:
			t.log.Warn("oslo: connection to RabbitMQ lost, reconnecting", "url", s.uri, "err", s.err)
		case <-t.ctx.Done():
		}
		t.mu.Lock()
		t.sess = nil
		t.ready = make(chan struct{})
		t.mu.Unlock()
		if t.ctx.Err() != nil {
			_ = s.conn.Close()
			<-s.dead
			return
		}
		_ = s.conn.Close()
		gen++
	}
}

// backoff is kombu's retry schedule: interval, interval+step, ... capped.
func (t *Transport) backoff(attempt int) time.Duration {
	d := t.cfg.RetryInterval + time.Duration(attempt)*t.cfg.RetryBackoff
	return min(d, t.cfg.RetryMax)
}

func (t *Transport) connect(gen int, uri amqp.URI) (*session, error) {
	props := amqp.NewConnectionProperties() // amqp091 adds the capabilities
	props.SetClientConnectionName(t.cfg.ConnectionName)
	props["product"] = "l3ha"
	conn, err := amqp.DialConfig(uri.String(), amqp.Config{
		Heartbeat:  t.cfg.HeartbeatTimeout,
		Locale:     "en_US",
		Properties: props,
		Dial: func(network, addr string) (net.Conn, error) {
			d := net.Dialer{Timeout: 30 * time.Second}
			c, err := d.DialContext(t.ctx, network, addr)
			if err != nil {
				return nil, err
			}
			// Handshake deadline; amqp091 clears it once the connection is open.
			if err := c.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
				c.Close()
				return nil, err
			}
			return c, nil
		},
	})
	if err != nil {
		return nil, err
	}
	s := &session{gen: gen, uri: redactURI(uri), conn: conn, dead: make(chan struct{}),
		declared: map[string]bool{}}
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	blocked := conn.NotifyBlocked(make(chan amqp.Blocking, 4))
	go func() {
		for {
			select {
			case b, ok := <-blocked:
				if ok && b.Active {
					t.log.Error("oslo: the broker has blocked the connection", "reason", b.Reason)
				} else if ok {
					t.log.Info("oslo: the broker has unblocked the connection")
				} else {
					blocked = nil
				}
			case e, ok := <-closed:
				if ok && e != nil {
					s.err = e
				} else {
					s.err = amqp.ErrClosed
				}
				close(s.dead)
				return
			}
		}
	}()
	return s, nil
}

// alive reports whether s has not died.
func (s *session) alive() bool {
	select {
	case <-s.dead:
		return false
	default:
		return true
	}
}

// publishing is one message to send.
type publishing struct {
	exchange   exchangeSpec
	key        string
	mandatory  bool
	body       []byte
	expiration time.Duration // 0: none
	what       string        // for errors
}

// publish sends p, waiting for a connection and retrying on a new one if
// the connection drops before the broker confirmed it. It returns the
// session the message was confirmed on.
func (t *Transport) publish(ctx context.Context, p publishing) (*session, error) {
	for {
		s, err := t.waitSession(ctx)
		if err != nil {
			return nil, fmt.Errorf("oslo: %s: waiting for the connection: %w", p.what, err)
		}
		err = s.publish(ctx, p)
		if err == nil {
			return s, nil
		}
		if errors.Is(err, ErrUnroutable) || ctx.Err() != nil {
			return s, fmt.Errorf("oslo: %s: %w", p.what, err)
		}
		if s.alive() {
			// A channel-level failure (say, an exchange declared with other
			// flags): retrying would fail the same way.
			return s, fmt.Errorf("oslo: %s: %w", p.what, err)
		}
		t.log.Debug("oslo: connection lost while publishing, retrying", "what", p.what, "err", err)
	}
}

func (s *session) publish(ctx context.Context, p publishing) error {
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	if s.pub == nil || s.pub.IsClosed() {
		ch, err := s.conn.Channel()
		if err != nil {
			return fmt.Errorf("opening a channel: %w", err)
		}
		if err := ch.Confirm(false); err != nil {
			ch.Close()
			return fmt.Errorf("enabling publisher confirms: %w", err)
		}
		s.pub = ch
		s.returns = ch.NotifyReturn(make(chan amqp.Return, 16))
		s.declared = map[string]bool{}
	}
	if e := p.exchange; e.name != "" && !s.declared[e.name] {
		if err := s.pub.ExchangeDeclare(e.name, e.kind, e.durable, e.autoDelete, false, false, nil); err != nil {
			return fmt.Errorf("declaring exchange %s: %w", e.name, err)
		}
		s.declared[e.name] = true
	}
	s.drainReturns(p.key)
	msg := amqp.Publishing{
		ContentType:     "application/json",
		ContentEncoding: "utf-8",
		DeliveryMode:    amqp.Persistent,
		Body:            p.body,
	}
	if p.expiration > 0 {
		msg.Expiration = strconv.FormatInt(max(p.expiration.Milliseconds(), 1), 10)
	}
	dc, err := s.pub.PublishWithDeferredConfirmWithContext(ctx, p.exchange.name, p.key, p.mandatory, false, msg)
	if err != nil {
		return err
	}
	acked, err := dc.WaitContext(ctx)
	if err != nil {
		return err
	}
	if !acked {
		if s.pub.IsClosed() || !s.alive() {
			return fmt.Errorf("channel closed before the broker confirmed the message: %w", amqp.ErrClosed)
		}
		return errors.New("the broker refused (nacked) the message")
	}
	// basic.return precedes the ack on the channel, so a return for this
	// message has been queued by now.
	if p.mandatory && s.drainReturns(p.key) {
		return ErrUnroutable
	}
	return nil
}

// drainReturns empties the returns channel and reports whether one was for key.
func (s *session) drainReturns(key string) bool {
	found := false
	for {
		select {
		case r, ok := <-s.returns:
			if !ok {
				return found
			}
			if r.RoutingKey == key {
				found = true
			}
		default:
			return found
		}
	}
}

// queueSpec is what a consumer declares: the exchange, the queue and the
// binding between them (none on the default exchange).
type queueSpec struct {
	exchange            exchangeSpec
	queue               string
	durable, autoDelete bool
	args                amqp.Table
	key                 string
}

// consumer is a queue consumed on every session until removed.
type consumer struct {
	t      *Transport
	spec   queueSpec
	handle func(s *session, d amqp.Delivery)

	mu       sync.Mutex
	gen      int   // session generation it was started on
	firstErr error // result of the first declaration on gen
	stop     chan struct{}
	stopOnce sync.Once
	chMu     sync.Mutex
	ch       *amqp.Channel
}

func (t *Transport) newConsumer(spec queueSpec, handle func(*session, amqp.Delivery)) *consumer {
	return &consumer{t: t, spec: spec, handle: handle, stop: make(chan struct{})}
}

// addConsumer registers c (redeclared after every reconnect) and declares
// it now, waiting for the connection if needed.
func (t *Transport) addConsumer(ctx context.Context, c *consumer) error {
	t.mu.Lock()
	if t.ctx.Err() != nil {
		t.mu.Unlock()
		return ErrClosed
	}
	t.consumers[c] = struct{}{}
	t.mu.Unlock()
	for {
		s, err := t.waitSession(ctx)
		if err == nil {
			if err = c.ensure(s); err == nil {
				return nil
			}
			if !s.alive() {
				continue
			}
		}
		t.removeConsumer(c)
		return fmt.Errorf("oslo: consuming queue %s: %w", c.spec.queue, err)
	}
}

// removeConsumer stops consuming c's queue (the queue stays).
func (t *Transport) removeConsumer(c *consumer) {
	t.mu.Lock()
	delete(t.consumers, c)
	t.mu.Unlock()
	c.stopOnce.Do(func() { close(c.stop) })
	c.chMu.Lock()
	if c.ch != nil {
		_ = c.ch.Close()
	}
	c.chMu.Unlock()
}

// ensure starts c on s unless it already runs there, and returns the
// result of its first declaration on s.
func (c *consumer) ensure(s *session) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen == s.gen {
		return c.firstErr
	}
	c.gen = s.gen
	first := make(chan error, 1)
	go c.loop(s, first)
	select {
	case c.firstErr = <-first:
	case <-s.dead:
		c.firstErr = fmt.Errorf("%w: %v", ErrConnectionLost, s.err)
	}
	return c.firstErr
}

// loop consumes on s until s dies or c stops, redeclaring after the broker
// cancels the consumer (queue deleted) or the channel fails.
func (c *consumer) loop(s *session, first chan<- error) {
	for {
		ch, deliveries, err := c.declare(s)
		if first != nil {
			first <- err
			first = nil
		}
		if err == nil {
			c.chMu.Lock()
			c.ch = ch
			stopped := c.stopped()
			c.chMu.Unlock()
			if stopped {
				_ = ch.Close()
			}
			for d := range deliveries {
				c.handle(s, d)
			}
			_ = ch.Close() // after a broker-side cancel the channel is still open
		}
		if c.stopped() || !s.alive() {
			return
		}
		// The deliveries also end when the whole connection goes: give the
		// session a moment to report that before redeclaring on it.
		select {
		case <-s.dead:
			return
		case <-c.stop:
			return
		case <-time.After(c.t.cfg.ReconnectDelay):
		}
		if err == nil {
			err = errors.New("the broker cancelled the consumer or closed the channel")
		}
		c.t.log.Warn("oslo: consumer stopped, redeclaring", "queue", c.spec.queue, "err", err)
	}
}

func (c *consumer) stopped() bool {
	select {
	case <-c.stop:
		return true
	default:
		return false
	}
}

func (c *consumer) declare(s *session) (*amqp.Channel, <-chan amqp.Delivery, error) {
	sp := c.spec
	ch, err := s.conn.Channel()
	if err != nil {
		return nil, nil, fmt.Errorf("opening a channel: %w", err)
	}
	fail := func(what string, err error) (*amqp.Channel, <-chan amqp.Delivery, error) {
		_ = ch.Close()
		return nil, nil, fmt.Errorf("%s: %w", what, err)
	}
	if n := c.t.cfg.PrefetchCount; n > 0 {
		if err := ch.Qos(n, 0, false); err != nil {
			return fail("setting prefetch", err)
		}
	}
	if e := sp.exchange; e.name != "" {
		if err := ch.ExchangeDeclare(e.name, e.kind, e.durable, e.autoDelete, false, false, nil); err != nil {
			return fail("declaring exchange "+e.name, err)
		}
	}
	if _, err := ch.QueueDeclare(sp.queue, sp.durable, sp.autoDelete, false, false, sp.args); err != nil {
		return fail("declaring queue "+sp.queue, err)
	}
	if sp.exchange.name != "" {
		if err := ch.QueueBind(sp.queue, sp.key, sp.exchange.name, false, nil); err != nil {
			return fail("binding queue "+sp.queue+" to "+sp.exchange.name, err)
		}
	}
	deliveries, err := ch.Consume(sp.queue, "", false, false, false, false, nil)
	if err != nil {
		return fail("consuming "+sp.queue, err)
	}
	c.t.log.Debug("oslo: consuming", "queue", sp.queue, "exchange", sp.exchange.name, "routing_key", sp.key)
	return ch, deliveries, nil
}

// queueArgs are the arguments oslo gives its queues; ttl applies to reply
// and fanout queues only.
func (t *Transport) queueArgs(ttl bool) amqp.Table {
	args := amqp.Table{}
	if t.cfg.HAQueues {
		args["x-ha-policy"] = "all"
	}
	if ttl {
		args["x-expires"] = int32(t.cfg.TransientQueuesTTL.Milliseconds())
	}
	if len(args) == 0 {
		return nil
	}
	return args
}

func (t *Transport) topicExchange(name string) exchangeSpec {
	if name == "" {
		name = t.cfg.ControlExchange
	}
	return exchangeSpec{name: name, kind: "topic", durable: t.cfg.DurableQueues, autoDelete: t.cfg.AutoDelete}
}

func fanoutExchange(topic string) exchangeSpec {
	return exchangeSpec{name: topic + "_fanout", kind: "fanout", durable: false, autoDelete: true}
}
