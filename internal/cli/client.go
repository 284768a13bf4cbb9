package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/l3ha/l3ha/internal/tlsconf"
)

// defaultTimeout bounds every API call (connect, request and reading the answer).
const defaultTimeout = 30 * time.Second

// maxBody caps how much of a response the client reads.
const maxBody = 32 << 20

// client is a small Neutron v2.0 API client. Every call takes a context and is
// bounded by timeout.
type client struct {
	baseURL string // e.g. http://127.0.0.1:9696, without /v2.0
	token   string // X-Auth-Token
	project string // X-Project-Id (server noauth mode)
	roles   string // X-Roles (server noauth mode)
	timeout time.Duration
	http    *http.Client
}

// newClient returns a client for the API at rawURL. A trailing "/v2.0" in the
// URL is accepted and ignored, as is a trailing slash. caFile (PEM), when
// given, is what an https server's certificate must chain to.
func newClient(rawURL, token, project, roles, caFile string) (*client, error) {
	u, err := url.Parse(strings.TrimSpace(rawURL))
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("invalid --url %q: want http(s)://host:port", rawURL)
	}
	base := strings.TrimRight(u.String(), "/")
	base = strings.TrimSuffix(base, "/v2.0")
	tr, err := tlsconf.Transport(caFile)
	if err != nil {
		return nil, fmt.Errorf("--ca-cert: %w", err)
	}
	return &client{
		baseURL: base,
		token:   token,
		project: project,
		roles:   roles,
		timeout: defaultTimeout,
		http:    &http.Client{Transport: tr},
	}, nil
}

// apiError is a non-2xx answer from the server. For Neutron errors, Type,
// Message and Detail come from the {"NeutronError": {...}} body.
type apiError struct {
	Status  int
	Type    string
	Message string
	Detail  string
}

func (e *apiError) statusText() string {
	if t := http.StatusText(e.Status); t != "" {
		return fmt.Sprintf("HTTP %d %s", e.Status, t)
	}
	return fmt.Sprintf("HTTP %d", e.Status)
}

func (e *apiError) Error() string {
	head := e.statusText()
	if e.Type != "" {
		head += ", " + e.Type
	}
	return head + ": " + e.Message
}

// render returns the line(s) the CLI prints for the error, in the style
// "Error (HTTP 409 Conflict, IpAddressInUse): <message>".
func (e *apiError) render() string {
	head := "Error (" + e.statusText()
	if e.Type != "" {
		head += ", " + e.Type
	}
	s := head + "): " + e.Message
	if e.Detail != "" && e.Detail != e.Message {
		s += "\nDetail: " + e.Detail
	}
	return s
}

// renderError formats any error returned by a command for the terminal.
func renderError(err error) string {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.render()
	}
	return "Error: " + err.Error()
}

// parseAPIError builds an apiError from an error response.
func parseAPIError(status int, body []byte) *apiError {
	e := &apiError{Status: status}
	var env struct {
		NeutronError json.RawMessage `json:"NeutronError"`
	}
	if json.Unmarshal(body, &env) == nil && len(env.NeutronError) > 0 {
		var ne struct {
			Type    string `json:"type"`
			Message string `json:"message"`
			Detail  string `json:"detail"`
		}
		var msg string
		switch {
		case json.Unmarshal(env.NeutronError, &ne) == nil:
			e.Type, e.Message, e.Detail = ne.Type, ne.Message, ne.Detail
		case json.Unmarshal(env.NeutronError, &msg) == nil: // very old servers
			e.Message = msg
		}
	}
	if e.Message == "" {
		e.Message = firstLine(body)
	}
	if e.Message == "" {
		e.Message = http.StatusText(status)
	}
	if e.Message == "" {
		e.Message = "no error message in the answer"
	}
	return e
}

// firstLine returns the first non-blank line of a (text) body, trimmed and
// shortened, for servers or proxies that do not answer in JSON.
func firstLine(body []byte) string {
	for _, l := range strings.Split(string(body), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			if len(l) > 200 {
				l = l[:200] + "..."
			}
			return l
		}
	}
	return ""
}

// do sends one request. in, when not nil, is sent as the JSON body. It returns
// the response body of a 2xx answer, or an *apiError.
func (c *client) do(ctx context.Context, method, path string, query url.Values, in any) ([]byte, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	u := c.baseURL + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("encoding request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "l3ha-cli")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("X-Auth-Token", c.token)
	}
	if c.project != "" {
		req.Header.Set("X-Project-Id", c.project)
	}
	if c.roles != "" {
		req.Header.Set("X-Roles", c.roles)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && c.timeout > 0 {
			return nil, fmt.Errorf("%s %s: no answer within %s", method, u, c.timeout)
		}
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, fmt.Errorf("%s %s: reading answer: %w", method, u, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, parseAPIError(resp.StatusCode, data)
	}
	return data, nil
}

// get fetches path and returns the value under key of the answer.
func (c *client) get(ctx context.Context, path string, query url.Values, key string) (json.RawMessage, error) {
	data, err := c.do(ctx, http.MethodGet, path, query, nil)
	if err != nil {
		return nil, err
	}
	return unwrap(data, key)
}

// send issues a POST or PUT and returns the value under key of the answer
// (the whole answer when key is "").
func (c *client) send(ctx context.Context, method, path string, in any, key string) (json.RawMessage, error) {
	data, err := c.do(ctx, method, path, nil, in)
	if err != nil {
		return nil, err
	}
	if key == "" {
		if len(bytes.TrimSpace(data)) == 0 {
			return json.RawMessage("{}"), nil
		}
		if !json.Valid(data) {
			return nil, fmt.Errorf("%s %s: answer is not JSON", method, path)
		}
		return json.RawMessage(data), nil
	}
	return unwrap(data, key)
}

// del issues a DELETE.
func (c *client) del(ctx context.Context, path string) error {
	_, err := c.do(ctx, http.MethodDelete, path, nil, nil)
	return err
}

// unwrap returns the value under key of a JSON object such as
// {"network": {...}} or {"networks": [...]}.
func unwrap(data []byte, key string) (json.RawMessage, error) {
	var env map[string]json.RawMessage
	if err := json.Unmarshal(data, &env); err != nil {
		return nil, fmt.Errorf("answer is not a JSON object: %w", err)
	}
	v, ok := env[key]
	if !ok {
		return nil, fmt.Errorf("answer has no %q key", key)
	}
	return v, nil
}
