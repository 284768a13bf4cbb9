package agentapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Client is the agents' HTTP client of the agent endpoint. It knows one or
// more servers (several l3ha servers may share one PostgreSQL) and sends
// every request to the one that answered last; a server that cannot be
// reached or answers 5xx is passed over for the next, within the same call,
// so that a dead server costs a report one connection attempt, not a retry
// period. It is safe for concurrent use.
type Client struct {
	bases []string // server URLs without a trailing slash
	cur   atomic.Int32
	token string
	hc    *http.Client
	log   *slog.Logger
}

// NewClient returns a client of the agent endpoint at the servers' URLs
// (for example "https://10.0.0.1:9696"), sending token in TokenHeader. A nil
// hc means an http.Client without a timeout: deadlines then come from the
// contexts. A non-nil hc must have a Timeout of zero or longer than the
// longest WaitState wait, or the long-poll fails. log (nil: none) hears
// when the client moves to another server.
func NewClient(servers []string, token string, hc *http.Client, log *slog.Logger) *Client {
	if hc == nil {
		hc = &http.Client{}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Client{token: token, hc: hc, log: log}
	for _, u := range servers {
		c.bases = append(c.bases, strings.TrimRight(u, "/"))
	}
	return c
}

// Server is the URL of the server the client talks to now.
func (c *Client) Server() string {
	if len(c.bases) == 0 {
		return ""
	}
	return c.bases[int(c.cur.Load())%len(c.bases)]
}

// StatusError is a reply with an unexpected HTTP status. Type, Message and
// Detail come from a Neutron style error body
// {"NeutronError":{"type","message","detail"}}; Body holds the start of any
// other body.
type StatusError struct {
	Op         string // what was being done, e.g. "heartbeat"
	Method     string
	URL        string
	StatusCode int
	Type       string
	Message    string
	Detail     string
	Body       string
}

func (e *StatusError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "agentapi: %s: %s %s: %d %s", e.Op, e.Method, e.URL, e.StatusCode, http.StatusText(e.StatusCode))
	switch {
	case e.Message != "" && e.Type != "":
		fmt.Fprintf(&b, ": %s: %s", e.Type, e.Message)
	case e.Message != "":
		fmt.Fprintf(&b, ": %s", e.Message)
	case e.Type != "":
		fmt.Fprintf(&b, ": %s", e.Type)
	case e.Body != "":
		fmt.Fprintf(&b, ": %q", e.Body)
	}
	return b.String()
}

// maxErrorBody bounds how much of an error body is read.
const maxErrorBody = 64 << 10

// Heartbeat registers the agent (first call) or refreshes its liveness.
func (c *Client) Heartbeat(ctx context.Context, hb Heartbeat) (HeartbeatReply, error) {
	var reply HeartbeatReply
	resp, err := c.do(ctx, "heartbeat", http.MethodPost, PathHeartbeat, nil, hb)
	if err != nil {
		return reply, err
	}
	defer drainClose(resp.Body)
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
		return reply, statusError("heartbeat", resp)
	}
	if err := json.NewDecoder(resp.Body).Decode(&reply); err != nil {
		return reply, fmt.Errorf("agentapi: heartbeat: decoding reply (HTTP %d): %w", resp.StatusCode, err)
	}
	return reply, nil
}

// WaitState long-polls the desired state of host. etag is the ETag of the
// state the caller holds ("" for none); the server holds the request for up to
// wait (sent in whole seconds, rounded up) when nothing changed. It returns the
// new state and changed=true (200), or nil and changed=false when wait expired
// with nothing new (204, or 304).
func (c *Client) WaitState(ctx context.Context, host, etag string, wait time.Duration) (*DesiredState, bool, error) {
	q := url.Values{}
	q.Set("host", host)
	q.Set("etag", etag)
	q.Set("wait", strconv.Itoa(waitSeconds(wait)))
	resp, err := c.do(ctx, "waiting for desired state", http.MethodGet, PathState, q, nil)
	if err != nil {
		return nil, false, err
	}
	defer drainClose(resp.Body)
	switch resp.StatusCode {
	case http.StatusOK:
		var st DesiredState
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
			return nil, false, fmt.Errorf("agentapi: waiting for desired state: decoding reply (HTTP %d): %w", resp.StatusCode, err)
		}
		return &st, true, nil
	case http.StatusNoContent, http.StatusNotModified:
		return nil, false, nil
	default:
		return nil, false, statusError("waiting for desired state", resp)
	}
}

// waitSeconds is wait in whole seconds, rounded up, never negative.
func waitSeconds(wait time.Duration) int {
	if wait <= 0 {
		return 0
	}
	return int(math.Ceil(wait.Seconds()))
}

// ReportHAStates sends a batch of HA state transitions.
func (c *Client) ReportHAStates(ctx context.Context, r HAStateReport) error {
	resp, err := c.do(ctx, "reporting HA states", http.MethodPost, PathHAStates, nil, r)
	if err != nil {
		return err
	}
	defer drainClose(resp.Body)
	if resp.StatusCode/100 != 2 {
		return statusError("reporting HA states", resp)
	}
	return nil
}

// do sends one request; body, when not nil, is sent as JSON. It starts at
// the server in use and moves on to the next when one cannot be reached or
// answers 5xx (other than 501: a request it will never take); the last
// server's answer or error is returned.
func (c *Client) do(ctx context.Context, op, method, path string, q url.Values, body any) (*http.Response, error) {
	if len(c.bases) == 0 {
		return nil, fmt.Errorf("agentapi: %s: no server URL", op)
	}
	var buf []byte
	if body != nil {
		var err error
		if buf, err = json.Marshal(body); err != nil {
			return nil, fmt.Errorf("agentapi: %s: encoding request: %w", op, err)
		}
	}
	start := int(c.cur.Load())
	var lastErr error
	for i := range c.bases {
		idx := (start + i) % len(c.bases)
		resp, err := c.send(ctx, op, method, c.bases[idx]+path, q, buf, body != nil)
		last := i == len(c.bases)-1
		if err == nil && (resp.StatusCode < 500 || resp.StatusCode == http.StatusNotImplemented) {
			if idx != start && c.cur.CompareAndSwap(int32(start), int32(idx)) {
				c.log.Warn("agent endpoint: moved to another server", "from", c.bases[start], "to", c.bases[idx], "because", lastErr)
			}
			return resp, nil
		}
		if ctx.Err() != nil {
			if err == nil {
				drainClose(resp.Body)
			}
			return nil, fmt.Errorf("agentapi: %s: %w", op, ctx.Err())
		}
		if last {
			return resp, err
		}
		if err == nil {
			lastErr = statusError(op, resp)
			drainClose(resp.Body)
		} else {
			lastErr = err
		}
	}
	return nil, lastErr // not reached: the last server's answer returns above
}

func (c *Client) send(ctx context.Context, op, method, u string, q url.Values, buf []byte, hasBody bool) (*http.Response, error) {
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var rd io.Reader
	if hasBody {
		rd = bytes.NewReader(buf)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, fmt.Errorf("agentapi: %s: %w", op, err)
	}
	if hasBody {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set(TokenHeader, c.token)
	resp, err := c.hc.Do(req)
	if err != nil {
		// url.Error already names the method and the URL.
		return nil, fmt.Errorf("agentapi: %s: %w", op, err)
	}
	return resp, nil
}

// statusError builds the error of an unexpected reply.
func statusError(op string, resp *http.Response) error {
	e := &StatusError{
		Op:         op,
		Method:     resp.Request.Method,
		URL:        redactURL(resp.Request.URL),
		StatusCode: resp.StatusCode,
	}
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var nb struct {
		NeutronError *struct {
			Type    string `json:"type"`
			Message string `json:"message"`
			Detail  string `json:"detail"`
		} `json:"NeutronError"`
	}
	if err := json.Unmarshal(raw, &nb); err == nil && nb.NeutronError != nil {
		e.Type = nb.NeutronError.Type
		e.Message = nb.NeutronError.Message
		e.Detail = nb.NeutronError.Detail
	} else {
		s := strings.TrimSpace(string(raw))
		if len(s) > 200 {
			s = s[:200] + "…"
		}
		e.Body = s
	}
	return e
}

// redactURL drops any user info from u.
func redactURL(u *url.URL) string {
	if u == nil {
		return ""
	}
	return u.Redacted()
}

// drainClose reads a little of what is left of body, so that the connection
// can be reused, and closes it.
func drainClose(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, maxErrorBody))
	_ = body.Close()
}

// IsStatus reports whether err is a StatusError with the given status code.
func IsStatus(err error, code int) bool {
	var se *StatusError
	return errors.As(err, &se) && se.StatusCode == code
}
