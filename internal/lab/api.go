package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/l3ha/l3ha/internal/tlsconf"
)

// nsDialer returns a DialContext whose sockets are created inside the named
// network namespace. The lab command runs in the root namespace, which has
// no route to the lab's server (10.99.0.1 exists only in the lab) and must
// not get one; a socket, however, belongs for its whole life to the
// namespace it was created in. So each dial runs on a goroutine locked to a
// thread that has entered the namespace (net.Dialer creates the socket on the
// calling thread); the thread goes back to its own namespace afterwards. No
// address or route is added anywhere, and no process is forked per request.
func nsDialer(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var conn net.Conn
		err := inNamespace(ns, func() error {
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			conn = c
			return err
		})
		return conn, err
	}
}

// apiClient is a small Neutron v2.0 client for the lab's server. Without
// Keystone it sends no identity headers: the lab's server then runs with
// auth_strategy noauth, where such requests act as admin of project
// "admin"; with Keystone it sends the lab admin's token.
type apiClient struct {
	base string
	http *http.Client
	// token, when set (a lab with Keystone), gives the X-Auth-Token of
	// every request; fresh asks for a new one after a 401.
	token func(ctx context.Context, fresh bool) (string, error)
}

// newAPIClient returns a client for the server at base
// (https://10.99.0.1:9696) whose connections are opened inside namespace ns
// and trust the CA of caFile (the lab's).
func newAPIClient(ns, base, caFile string) *apiClient {
	tr := &http.Transport{
		DialContext:         nsDialer(ns),
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     30 * time.Second,
	}
	if ca, err := tlsconf.Transport(caFile); err == nil {
		// A lab without its CA file (removed behind its back) gets
		// errors from the handshake, which say what is wrong.
		tr.TLSClientConfig = ca.TLSClientConfig
	}
	return &apiClient{base: strings.TrimRight(base, "/"), http: &http.Client{Transport: tr, Timeout: 15 * time.Second}}
}

// close drops idle connections.
func (c *apiClient) close() { c.http.CloseIdleConnections() }

// apiError is a non-2xx answer.
type apiError struct {
	Method, Path string
	Status       int
	Body         string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%s %s: HTTP %d: %s", e.Method, e.Path, e.Status, strings.TrimSpace(e.Body))
}

// do sends a request with in as JSON body (unless nil) and decodes the
// answer into out (unless nil). With Keystone, a 401 (the remembered token
// expired or was revoked) is retried once with a fresh token.
func (c *apiClient) do(ctx context.Context, method, path string, in, out any) error {
	if c.token == nil {
		return c.send(ctx, method, path, in, out, "")
	}
	tok, err := c.token(ctx, false)
	if err != nil {
		return err
	}
	err = c.send(ctx, method, path, in, out, tok)
	if ae, ok := err.(*apiError); ok && ae.Status == http.StatusUnauthorized {
		if tok, err = c.token(ctx, true); err != nil {
			return fmt.Errorf("%w (after %s %s answered 401)", err, method, path)
		}
		return c.send(ctx, method, path, in, out, tok)
	}
	return err
}

// send makes one request, with token (unless "") as X-Auth-Token.
func (c *apiClient) send(ctx context.Context, method, path string, in, out any, token string) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "l3ha-lab")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("X-Auth-Token", token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		if len(data) > 500 {
			data = data[:500]
		}
		return &apiError{Method: method, Path: path, Status: resp.StatusCode, Body: string(data)}
	}
	if out != nil && len(bytes.TrimSpace(data)) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: decoding answer: %w", method, path, err)
		}
	}
	return nil
}

// apiAgent is an agent as GET /v2.0/agents and routers/{id}/l3-agents show it.
type apiAgent struct {
	ID             string         `json:"id"`
	Host           string         `json:"host"`
	AgentType      string         `json:"agent_type"`
	Alive          bool           `json:"alive"`
	AdminStateUp   bool           `json:"admin_state_up"`
	Configurations map[string]any `json:"configurations"`
	HAState        *string        `json:"ha_state,omitempty"`
}

func (a apiAgent) mode() string {
	m, _ := a.Configurations["agent_mode"].(string)
	return m
}

func (a apiAgent) haState() string {
	if a.HAState == nil {
		return ""
	}
	return *a.HAState
}

func (c *apiClient) agents(ctx context.Context) ([]apiAgent, error) {
	var out struct {
		Agents []apiAgent `json:"agents"`
	}
	err := c.do(ctx, http.MethodGet, "/v2.0/agents", nil, &out)
	return out.Agents, err
}

func (c *apiClient) routerAgents(ctx context.Context, routerID string) ([]apiAgent, error) {
	var out struct {
		Agents []apiAgent `json:"agents"`
	}
	err := c.do(ctx, http.MethodGet, "/v2.0/routers/"+url.PathEscape(routerID)+"/l3-agents", nil, &out)
	return out.Agents, err
}

// Transition is one row of a router's HA transition history, as the API
// shows it (GET /v2.0/routers/{id}/ha_transitions).
type Transition struct {
	Host   string `json:"host"`
	From   string `json:"from"`
	To     string `json:"to"`
	At     string `json:"at"`
	Reason string `json:"reason"`
}

// routerHistory returns the newest limit transitions of the router, oldest
// first.
func (c *apiClient) routerHistory(ctx context.Context, routerID string, limit int) ([]Transition, error) {
	var out struct {
		Transitions []Transition `json:"ha_transitions"`
	}
	err := c.do(ctx, http.MethodGet, fmt.Sprintf("/v2.0/routers/%s/ha_transitions?limit=%d", url.PathEscape(routerID), limit), nil, &out)
	return out.Transitions, err
}

// switchover asks the server to move the router's master to agentID.
func (c *apiClient) switchover(ctx context.Context, routerID, agentID string) error {
	return c.do(ctx, http.MethodPost, "/v2.0/routers/"+url.PathEscape(routerID)+"/switchover", map[string]any{"agent_id": agentID}, nil)
}

// apiRouter is the part of a router the lab reads.
type apiRouter struct {
	ID                  string `json:"id"`
	Name                string `json:"name"`
	Status              string `json:"status"`
	HA                  bool   `json:"ha"`
	ExternalGatewayInfo *struct {
		NetworkID        string `json:"network_id"`
		ExternalFixedIPs []struct {
			SubnetID  string `json:"subnet_id"`
			IPAddress string `json:"ip_address"`
		} `json:"external_fixed_ips"`
	} `json:"external_gateway_info"`
}

func (r apiRouter) gatewayIP() string {
	if r.ExternalGatewayInfo == nil || len(r.ExternalGatewayInfo.ExternalFixedIPs) == 0 {
		return ""
	}
	return r.ExternalGatewayInfo.ExternalFixedIPs[0].IPAddress
}

func (c *apiClient) routers(ctx context.Context) ([]apiRouter, error) {
	var out struct {
		Routers []apiRouter `json:"routers"`
	}
	err := c.do(ctx, http.MethodGet, "/v2.0/routers", nil, &out)
	return out.Routers, err
}

// create POSTs {singular: body} to /v2.0/<collection> and decodes the
// created object into out.
func (c *apiClient) create(ctx context.Context, collection, singular string, body map[string]any, out any) error {
	var env map[string]json.RawMessage
	if err := c.do(ctx, http.MethodPost, "/v2.0/"+collection, map[string]any{singular: body}, &env); err != nil {
		return err
	}
	raw, ok := env[singular]
	if !ok {
		return fmt.Errorf("POST /v2.0/%s: answer has no %q", collection, singular)
	}
	return json.Unmarshal(raw, out)
}

// idOnly decodes the id of any resource.
type idOnly struct {
	ID string `json:"id"`
}

// findByName returns the id of the first <collection> object named name that
// also matches the extra query, or "".
func (c *apiClient) findByName(ctx context.Context, collection, name string, extra url.Values) (string, error) {
	q := url.Values{"name": {name}}
	for k, v := range extra {
		q[k] = v
	}
	var env map[string][]idOnly
	if err := c.do(ctx, http.MethodGet, "/v2.0/"+collection+"?"+q.Encode(), nil, &env); err != nil {
		return "", err
	}
	if l := env[collection]; len(l) > 0 {
		return l[0].ID, nil
	}
	return "", nil
}

// ping checks that the server answers HTTP (any status below 500). It
// sends no token: a 401 is an answer too, and the server's readiness does
// not wait for a Keystone login.
func (c *apiClient) ping(ctx context.Context) error {
	err := c.send(ctx, http.MethodGet, "/", nil, nil, "")
	if ae, ok := err.(*apiError); ok && ae.Status < 500 {
		return nil
	}
	return err
}
