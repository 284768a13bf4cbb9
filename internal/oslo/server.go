package oslo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Handler serves one RPC method. msgCtx is the caller's request context
// (the _context_* entries), args the keyword arguments object. The result
// is marshalled to JSON (a json.RawMessage is sent as is). An error is sent
// to a caller as an exception: a *RemoteError keeps its class and module,
// any other error becomes builtins.RuntimeError.
type Handler func(ctx context.Context, msgCtx map[string]any, args json.RawMessage) (any, error)

// Endpoint is a group of methods with the namespace and version they
// implement, like an oslo endpoint object with a target attribute.
type Endpoint struct {
	Namespace string // "" = none
	Version   string // "" = "1.0"
	Methods   map[string]Handler
}

// Server consumes a topic and dispatches requests to endpoints.
type Server struct {
	t         *Transport
	target    Target
	endpoints []Endpoint

	mu        sync.Mutex
	consumers []*consumer
	running   bool

	baseCtx context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	sem     chan struct{}

	dedupMu sync.Mutex
	seen    []string // last dedupSize _unique_ids, ring
	seenAt  int

	gone *replyQueueCache
}

const dedupSize = 16 // oslo's _MsgIdCache.DUP_MSG_CHECK_SIZE

// NewServer returns a server for target (Topic and Server required).
func NewServer(t *Transport, target Target, endpoints ...Endpoint) (*Server, error) {
	if target.Topic == "" || target.Server == "" {
		return nil, fmt.Errorf("oslo: a server's target must have topic and server names specified: %s", target)
	}
	return &Server{t: t, target: target, endpoints: endpoints,
		sem: make(chan struct{}, t.cfg.ExecutorPoolSize), seen: make([]string, dedupSize),
		gone: newReplyQueueCache()}, nil
}

// Start declares the server's exchanges and queues (<topic>, <topic>.<server>
// and <topic>_fanout_<uuid>) and starts consuming them; they are
// redeclared after every reconnect. It waits for the connection if needed.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running {
		return errors.New("oslo: server already started")
	}
	s.baseCtx, s.cancel = context.WithCancel(context.Background())
	tp := s.target.Topic
	ex := s.t.topicExchange(s.target.Exchange)
	specs := []queueSpec{
		{exchange: ex, queue: tp, key: tp, durable: s.t.cfg.DurableQueues,
			autoDelete: s.t.cfg.AutoDelete, args: s.t.queueArgs(false)},
		{exchange: ex, queue: tp + "." + s.target.Server, key: tp + "." + s.target.Server,
			durable: s.t.cfg.DurableQueues, autoDelete: s.t.cfg.AutoDelete, args: s.t.queueArgs(false)},
		{exchange: fanoutExchange(tp), queue: tp + "_fanout_" + newID(), key: tp, args: s.t.queueArgs(true)},
	}
	for _, sp := range specs {
		c := s.t.newConsumer(sp, s.onDelivery)
		if err := s.t.addConsumer(ctx, c); err != nil {
			for _, c := range s.consumers {
				s.t.removeConsumer(c)
			}
			s.consumers = nil
			s.cancel()
			return fmt.Errorf("oslo: starting server %s: %w", s.target, err)
		}
		s.consumers = append(s.consumers, c)
	}
	s.running = true
	s.t.log.Info("oslo: RPC server started", "topic", tp, "server", s.target.Server,
		"exchange", ex.name, "fanout_queue", specs[2].queue)
	return nil
}

// Queues are the names of the queues the server consumes.
func (s *Server) Queues() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, c := range s.consumers {
		out = append(out, c.spec.queue)
	}
	return out
}

// Stop stops consuming, then waits for running handlers until ctx ends,
// when their contexts are cancelled.
func (s *Server) Stop(ctx context.Context) error {
	s.mu.Lock()
	if !s.running {
		s.mu.Unlock()
		return nil
	}
	s.running = false
	for _, c := range s.consumers {
		s.t.removeConsumer(c)
	}
	s.consumers = nil
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		s.cancel()
		return nil
	case <-ctx.Done():
		s.cancel()
		<-done
		return fmt.Errorf("oslo: stopping server %s: %w", s.target, ctx.Err())
	}
}

// duplicate reports whether id was seen recently, and records it.
func (s *Server) duplicate(id string) bool {
	if id == "" {
		return false
	}
	s.dedupMu.Lock()
	defer s.dedupMu.Unlock()
	for _, x := range s.seen {
		if x == id {
			return true
		}
	}
	s.seen[s.seenAt] = id
	s.seenAt = (s.seenAt + 1) % len(s.seen)
	return false
}

func (s *Server) onDelivery(_ *session, d amqp.Delivery) {
	// Acknowledge first, then dispatch (oslo's at-most-once RPC).
	if err := d.Ack(false); err != nil {
		s.t.log.Warn("oslo: discarding request after failed acknowledge", "err", err)
		return
	}
	log := s.t.log.With("topic", s.target.Topic, "server", s.target.Server, "routing_key", d.RoutingKey)
	req, err := DecodeRequest(d.Body)
	if err != nil {
		log.Warn("oslo: dropping malformed request", "err", err, "bytes", len(d.Body))
		if req != nil && req.MsgID != "" && req.ReplyQ != "" {
			s.spawn(func(ctx context.Context) {
				s.reply(ctx, req, nil, &RemoteError{Module: "builtins", Class: "ValueError", Message: err.Error()})
			})
		}
		return
	}
	if s.duplicate(req.UniqueID) {
		log.Warn("oslo: ignoring duplicate message", "unique_id", req.UniqueID, "method", req.Method)
		return
	}
	s.spawn(func(ctx context.Context) { s.serve(ctx, req) })
}

// spawn runs f in the handler pool; it blocks while the pool is full.
func (s *Server) spawn(f func(context.Context)) {
	s.wg.Add(1)
	s.sem <- struct{}{}
	go func() {
		defer func() { <-s.sem; s.wg.Done() }()
		f(s.baseCtx)
	}()
}

// find resolves a method like oslo's RPCDispatcher: among endpoints whose
// namespace matches and whose version is compatible, the first with the
// method; private (_-prefixed) methods are never exposed.
func (s *Server) find(req *Request) (Handler, error) {
	version := req.Version
	if version == "" {
		version = "1.0"
	}
	compatible := false
	for _, ep := range s.endpoints {
		if ep.Namespace != req.Namespace {
			continue
		}
		imp := ep.Version
		if imp == "" {
			imp = "1.0"
		}
		ok, err := versionCompatible(imp, version)
		if err != nil {
			return nil, &RemoteError{Module: "builtins", Class: "ValueError", Message: err.Error()}
		}
		if !ok {
			continue
		}
		if h := ep.Methods[req.Method]; h != nil && !strings.HasPrefix(req.Method, "_") {
			return h, nil
		}
		compatible = true
	}
	if compatible {
		return nil, NoSuchMethod(req.Method)
	}
	return nil, UnsupportedVersion(version, req.Method)
}

func (s *Server) serve(ctx context.Context, req *Request) {
	log := s.t.log.With("topic", s.target.Topic, "server", s.target.Server, "method", req.Method)
	if req.MsgID != "" {
		log = log.With("msg_id", req.MsgID, "reply_q", req.ReplyQ)
	}
	h, err := s.find(req)
	var result any
	if err != nil {
		log.Error("oslo: cannot dispatch request", "namespace", req.Namespace, "version", req.Version, "err", err)
	} else {
		stop := s.callMonitor(ctx, req)
		result, err = safeCall(ctx, h, req)
		stop()
		if err != nil {
			log.Warn("oslo: handler failed", "err", err)
		}
	}
	if req.MsgID == "" {
		return // a cast: nobody to tell
	}
	var raw json.RawMessage
	if err == nil {
		if raw, err = marshalResult(result); err != nil {
			log.Error("oslo: cannot encode result", "err", err)
			err = &RemoteError{Module: "builtins", Class: "TypeError", Message: err.Error()}
		}
	}
	s.reply(ctx, req, raw, err)
}

// safeCall runs h, turning a panic into an error so that one handler
// cannot bring the server down.
func safeCall(ctx context.Context, h Handler, req *Request) (res any, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("handler for %s panicked: %v", req.Method, p)
		}
	}()
	return h(ctx, req.Context, req.Args)
}

func marshalResult(v any) (json.RawMessage, error) {
	switch r := v.(type) {
	case nil:
		return nil, nil
	case json.RawMessage:
		if !json.Valid(r) {
			return nil, errors.New("result is not valid JSON")
		}
		return r, nil
	}
	return json.Marshal(v)
}

// callMonitor sends "still working" replies every _timeout/2 seconds while
// a call with a call-monitor timeout runs (oslo's dispatcher watchdog).
func (s *Server) callMonitor(ctx context.Context, req *Request) (stop func()) {
	if req.MsgID == "" || req.Timeout == nil || *req.Timeout/2 < 1 {
		return func() {}
	}
	interval := time.Duration(*req.Timeout / 2 * float64(time.Second))
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tk := time.NewTicker(interval)
		defer tk.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-tk.C:
				body, _ := EncodeReply(&Reply{MsgID: req.MsgID, UniqueID: newID(), Ending: false})
				hctx, cancel := context.WithTimeout(ctx, interval)
				_, err := s.t.publish(hctx, publishing{exchange: exchangeSpec{}, key: req.ReplyQ,
					mandatory: true, body: body, what: "call-monitor heartbeat to " + req.ReplyQ})
				cancel()
				if err != nil {
					s.t.log.Debug("oslo: call-monitor heartbeat failed", "msg_id", req.MsgID, "err", err)
					return
				}
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// reply sends the result or failure of a call to its reply queue (default
// exchange, mandatory), retrying while the queue is missing for
// MissingConsumerRetryTimeout, as oslo's AMQPIncomingMessage.reply does.
func (s *Server) reply(ctx context.Context, req *Request, result json.RawMessage, failure error) {
	log := s.t.log.With("msg_id", req.MsgID, "reply_q", req.ReplyQ)
	if s.gone.has(req.ReplyQ) {
		log.Warn("oslo: reply queue is gone, dropping reply")
		return
	}
	r := &Reply{Result: result, Ending: true, MsgID: req.MsgID, UniqueID: newID()}
	if failure != nil {
		r.Failure = failureFor(failure)
	}
	body, err := EncodeReply(r)
	if err != nil {
		log.Error("oslo: cannot encode reply", "err", err)
		return
	}
	timeout := s.t.cfg.MissingConsumerRetryTimeout
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		_, err := s.t.publish(rctx, publishing{exchange: exchangeSpec{}, key: req.ReplyQ, mandatory: true,
			body: body, what: "reply to " + req.ReplyQ})
		if err == nil {
			return
		}
		missing := errors.Is(err, ErrUnroutable)
		if !missing || rctx.Err() != nil {
			if ctx.Err() == nil && (missing || errors.Is(rctx.Err(), context.DeadlineExceeded)) {
				s.gone.add(req.ReplyQ)
			}
			log.Error("oslo: reply abandoned", "retried_for", timeout, "err", err)
			return
		}
		log.Debug("oslo: reply queue missing, retrying", "err", err)
		select {
		case <-rctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// replyQueueCache remembers reply queues that stayed missing, so that
// replies to a vanished client do not each hold a worker for a minute
// (oslo's ObsoleteReplyQueuesCache: 200 entries, 60 s).
type replyQueueCache struct {
	mu sync.Mutex
	m  map[string]time.Time
}

func newReplyQueueCache() *replyQueueCache { return &replyQueueCache{m: map[string]time.Time{}} }

func (c *replyQueueCache) has(q string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.m[q]
	if ok && time.Since(t) > time.Minute {
		delete(c.m, q)
		return false
	}
	return ok
}

func (c *replyQueueCache) add(q string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= 200 {
		for k, t := range c.m {
			if time.Since(t) > time.Minute || len(c.m) >= 200 {
				delete(c.m, k)
			}
		}
	}
	c.m[q] = time.Now()
}
