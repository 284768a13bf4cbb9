package oslo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Target says where a message goes (oslo_messaging.Target).
type Target struct {
	Topic  string
	Server string // "" = any server of the topic
	Fanout bool   // cast to every server of the topic
	// Version and Namespace are sent for the server's dispatcher.
	Version   string
	Namespace string
	// Exchange overrides the control exchange.
	Exchange string
}

func (tg Target) String() string {
	s := tg.Topic
	if tg.Server != "" {
		s += "." + tg.Server
	}
	if tg.Fanout {
		s += " (fanout)"
	}
	return s
}

type msgCtxKey struct{}

// WithMessageContext returns ctx carrying the request context sent with
// calls and casts (flattened into _context_* keys), e.g. Neutron's
// context.to_dict(): user_id, project_id, is_admin, roles, request_id...
func WithMessageContext(ctx context.Context, m map[string]any) context.Context {
	return context.WithValue(ctx, msgCtxKey{}, m)
}

// MessageContext returns the request context set by WithMessageContext.
func MessageContext(ctx context.Context) map[string]any {
	m, _ := ctx.Value(msgCtxKey{}).(map[string]any)
	return m
}

// Client makes calls and casts. It is safe for concurrent use.
type Client struct {
	t      *Transport
	replyQ string

	setupMu sync.Mutex
	reply   *consumer // declared on the first call

	mu      sync.Mutex
	waiters map[string]chan *Reply
}

// NewClient returns a client on t. Its reply queue reply_<uuid> is
// declared on the first call.
func NewClient(t *Transport) *Client {
	return &Client{t: t, replyQ: "reply_" + newID(), waiters: map[string]chan *Reply{}}
}

// ReplyQueue is the name of the client's reply queue.
func (c *Client) ReplyQueue() string { return c.replyQ }

// Close stops consuming the reply queue (which expires on the broker).
func (c *Client) Close() {
	c.setupMu.Lock()
	defer c.setupMu.Unlock()
	if c.reply != nil {
		c.t.removeConsumer(c.reply)
		c.reply = nil
	}
}

func (c *Client) ensureReplyQueue(ctx context.Context) error {
	c.setupMu.Lock()
	defer c.setupMu.Unlock()
	if c.reply != nil {
		return nil
	}
	spec := queueSpec{queue: c.replyQ, args: c.t.queueArgs(true)} // default exchange
	cons := c.t.newConsumer(spec, c.onReply)
	if err := c.t.addConsumer(ctx, cons); err != nil {
		return err
	}
	c.reply = cons
	return nil
}

func (c *Client) onReply(_ *session, d amqp.Delivery) {
	_ = d.Ack(false)
	r, err := DecodeReply(d.Body)
	if err != nil {
		c.t.log.Warn("oslo: dropping malformed reply", "queue", c.replyQ, "err", err, "bytes", len(d.Body))
		return
	}
	c.mu.Lock()
	ch := c.waiters[r.MsgID]
	c.mu.Unlock()
	if ch == nil {
		c.t.log.Info("oslo: no call waiting for reply", "msg_id", r.MsgID, "queue", c.replyQ)
		return
	}
	select {
	case ch <- r:
	default:
		c.t.log.Warn("oslo: dropping reply, waiter busy", "msg_id", r.MsgID)
	}
}

// argsJSON encodes args (nil, a JSON object as json.RawMessage or []byte,
// or anything marshalling to an object) as the "args" object.
func argsJSON(args any) (json.RawMessage, error) {
	var b []byte
	switch a := args.(type) {
	case nil:
		return json.RawMessage("{}"), nil
	case json.RawMessage:
		b = a
	case []byte:
		b = a
	default:
		var err error
		if b, err = json.Marshal(args); err != nil {
			return nil, err
		}
	}
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' || !json.Valid(b) {
		return nil, errors.New("args must be a JSON object (keyword arguments)")
	}
	return b, nil
}

func (c *Client) request(ctx context.Context, target Target, method string, args any) (*Request, error) {
	if target.Topic == "" {
		return nil, fmt.Errorf("oslo: %s: target has no topic", method)
	}
	a, err := argsJSON(args)
	if err != nil {
		return nil, fmt.Errorf("oslo: %s to %s: %w", method, target, err)
	}
	return &Request{Method: method, Args: a, Namespace: target.Namespace, Version: target.Version,
		Context: MessageContext(ctx), UniqueID: newID()}, nil
}

func (c *Client) route(target Target) (exchangeSpec, string) {
	if target.Fanout {
		return fanoutExchange(target.Topic), target.Topic
	}
	key := target.Topic
	if target.Server != "" {
		key += "." + target.Server
	}
	return c.t.topicExchange(target.Exchange), key
}

// Cast sends method(args) to target without waiting for a result;
// target.Fanout sends it to every server of the topic. It returns once the
// broker has confirmed the message, waiting for the connection if needed.
func (c *Client) Cast(ctx context.Context, target Target, method string, args any) error {
	req, err := c.request(ctx, target, method, args)
	if err != nil {
		return err
	}
	body, err := EncodeRequest(req)
	if err != nil {
		return err
	}
	ex, key := c.route(target)
	_, err = c.t.publish(ctx, publishing{exchange: ex, key: key, body: body,
		what: fmt.Sprintf("cast %s to %s", method, target)})
	return err
}

// Call sends method(args) to one server of target and returns the result
// (JSON). The wait is bounded by ctx's deadline, or the configured
// RPCResponseTimeout. A remote exception comes back as a *RemoteError;
// no reply in time is ErrTimeout; a connection lost meanwhile is
// ErrConnectionLost (the request may have been handled: retry only
// idempotent methods).
func (c *Client) Call(ctx context.Context, target Target, method string, args any) (json.RawMessage, error) {
	if target.Fanout {
		return nil, fmt.Errorf("oslo: call %s to %s: a call cannot be fanout", method, target)
	}
	req, err := c.request(ctx, target, method, args)
	if err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.t.cfg.RPCResponseTimeout)
		defer cancel()
	}
	what := fmt.Sprintf("call %s to %s", method, target)
	if err := c.ensureReplyQueue(ctx); err != nil {
		return nil, fmt.Errorf("oslo: %s: %w", what, err)
	}
	req.MsgID, req.ReplyQ = newID(), c.replyQ
	body, err := EncodeRequest(req)
	if err != nil {
		return nil, err
	}
	ch := make(chan *Reply, 4)
	c.mu.Lock()
	c.waiters[req.MsgID] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.waiters, req.MsgID)
		c.mu.Unlock()
	}()

	deadline, _ := ctx.Deadline()
	ex, key := c.route(target)
	s, err := c.t.publish(ctx, publishing{exchange: ex, key: key, body: body,
		expiration: time.Until(deadline), what: what})
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: message ID %s (%s): %w", ErrTimeout, req.MsgID, what, err)
		}
		return nil, err
	}
	var result json.RawMessage
	for {
		var r *Reply
		select {
		case r = <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w to message ID %s (%s): %w", ErrTimeout, req.MsgID, what, ctx.Err())
		case <-s.dead:
			select {
			case r = <-ch:
			default:
				return nil, fmt.Errorf("oslo: %s (message ID %s): %w: %v", what, req.MsgID, ErrConnectionLost, s.err)
			}
		}
		if r.Failure != nil {
			return nil, r.Failure.remoteError()
		}
		if r.Result != nil {
			result = r.Result
		}
		if r.Ending {
			if result == nil {
				result = json.RawMessage("null")
			}
			return result, nil
		}
		// ending false: a call-monitor heartbeat or an old-style first part.
	}
}
