package local

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

	"github.com/l3ha/l3ha/internal/keystone"
)

// Client is a Keystone v3 REST client for what tests and the lab need:
// password tokens, validation and revocation, and creating projects, users,
// roles, role assignments, services and endpoints. It is not safe to change
// its token (Login, SetToken) while other calls are in flight.
type Client struct {
	// IdentityURL is the v3 base, e.g. http://127.0.0.1:PORT/v3.
	IdentityURL string
	// HTTP does the requests.
	HTTP *http.Client

	token string // X-Auth-Token of everything but IssueToken
}

// NewClient returns a client without a token for the v3 API at
// identityURL; hc nil means http.DefaultClient.
func NewClient(identityURL string, hc *http.Client) *Client {
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Client{IdentityURL: strings.TrimRight(identityURL, "/"), HTTP: hc}
}

// Credentials are a user's password and the project a token is scoped to.
// Empty domains mean Domain ("Default").
type Credentials struct {
	Username      string
	Password      string
	Project       string
	UserDomain    string
	ProjectDomain string
}

// Token is an issued or validated token: the token (the X-Subject-Token)
// and what its body says.
// Its Roles are the role names, implied roles included (admin implies
// member, member implies reader).
type Token struct {
	ID string
	keystone.Token
}

// HasRole reports whether t carries role name.
func (t *Token) HasRole(name string) bool {
	for _, r := range t.Roles {
		if r == name {
			return true
		}
	}
	return false
}

// StatusError is an answer with an unexpected HTTP status.
type StatusError struct {
	Method, URL string
	StatusCode  int
	Message     string // Keystone's error.message, or the body
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s %s: %d %s: %s", e.Method, e.URL, e.StatusCode, http.StatusText(e.StatusCode), e.Message)
}

// IsNotFound reports whether err is a 404 answer (for a token: revoked,
// expired or never issued).
func IsNotFound(err error) bool {
	var se *StatusError
	return errors.As(err, &se) && se.StatusCode == http.StatusNotFound
}

// Token returns the client's token.
func (c *Client) Token() string { return c.token }

// SetToken sets the X-Auth-Token the client sends.
func (c *Client) SetToken(token string) { c.token = token }

// Login issues a token for cr and makes the client use it.
func (c *Client) Login(ctx context.Context, cr Credentials) (*Token, error) {
	t, err := c.IssueToken(ctx, cr)
	if err != nil {
		return nil, err
	}
	c.token = t.ID
	return t, nil
}

// IssueToken gets a project-scoped token by password (POST
// /v3/auth/tokens). It does not change the client's token.
func (c *Client) IssueToken(ctx context.Context, cr Credentials) (*Token, error) {
	ud, pd := cr.UserDomain, cr.ProjectDomain
	if ud == "" {
		ud = Domain
	}
	if pd == "" {
		pd = Domain
	}
	type name struct {
		Name string `json:"name"`
	}
	var body struct {
		Auth struct {
			Identity struct {
				Methods  []string `json:"methods"`
				Password struct {
					User struct {
						Name     string `json:"name"`
						Domain   name   `json:"domain"`
						Password string `json:"password"`
					} `json:"user"`
				} `json:"password"`
			} `json:"identity"`
			Scope struct {
				Project struct {
					Name   string `json:"name"`
					Domain name   `json:"domain"`
				} `json:"project"`
			} `json:"scope"`
		} `json:"auth"`
	}
	id := &body.Auth.Identity
	id.Methods = []string{"password"}
	id.Password.User.Name = cr.Username
	id.Password.User.Domain.Name = ud
	id.Password.User.Password = cr.Password
	body.Auth.Scope.Project.Name = cr.Project
	body.Auth.Scope.Project.Domain.Name = pd

	var out keystone.TokenBody
	anon := *c // a password request carries no X-Auth-Token
	anon.token = ""
	h, err := anon.do(ctx, http.MethodPost, "/auth/tokens?nocatalog", nil, body, &out, http.StatusCreated)
	if err != nil {
		return nil, fmt.Errorf("token for user %s on project %s: %w", cr.Username, cr.Project, err)
	}
	return tokenOf(h.Get("X-Subject-Token"), &out)
}

// ValidateToken validates subject with the client's token (GET
// /v3/auth/tokens), as a service validates its callers' tokens; a revoked
// or expired token is an error for which IsNotFound is true.
func (c *Client) ValidateToken(ctx context.Context, subject string) (*Token, error) {
	var out keystone.TokenBody
	if _, err := c.do(ctx, http.MethodGet, "/auth/tokens?nocatalog", http.Header{"X-Subject-Token": {subject}}, nil, &out, http.StatusOK); err != nil {
		return nil, fmt.Errorf("validating token: %w", err)
	}
	return tokenOf(subject, &out)
}

// RevokeToken revokes subject (DELETE /v3/auth/tokens).
func (c *Client) RevokeToken(ctx context.Context, subject string) error {
	if _, err := c.do(ctx, http.MethodDelete, "/auth/tokens", http.Header{"X-Subject-Token": {subject}}, nil, nil, http.StatusNoContent); err != nil {
		return fmt.Errorf("revoking token: %w", err)
	}
	return nil
}

// tokenOf is the Token of id whose body Keystone answered.
func tokenOf(id string, b *keystone.TokenBody) (*Token, error) {
	if id == "" {
		return nil, errors.New("token: answer without X-Subject-Token")
	}
	t, err := b.Decode()
	if err != nil {
		return nil, err
	}
	if t.ExpiresAt.IsZero() || t.IssuedAt.IsZero() {
		return nil, errors.New("token: answer without expires_at or issued_at")
	}
	return &Token{ID: id, Token: t}, nil
}

// Project is a project's name and id.
type Project struct {
	Name string
	ID   string
}

type ref struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// EnsureProject returns project name of domain "default", creating it if
// missing.
func (c *Client) EnsureProject(ctx context.Context, name string) (Project, error) {
	id, err := c.ensure(ctx, "project", "/projects?domain_id="+DomainID+"&name="+url.QueryEscape(name), "/projects", projectBody(name))
	return Project{Name: name, ID: id}, err
}

func projectBody(name string) any {
	return map[string]any{"project": map[string]any{"name": name, "domain_id": DomainID, "enabled": true}}
}

// EnsureUser creates user name in domain "default" with password and
// default project projectID, or, if it exists, sets its password and default
// project. It returns the user's id.
func (c *Client) EnsureUser(ctx context.Context, name, password, projectID string) (string, error) {
	ids, err := c.names(ctx, "user", "/users?domain_id="+DomainID+"&name="+url.QueryEscape(name))
	if err != nil {
		return "", err
	}
	return c.setUser(ctx, ids[name], name, password, projectID)
}

// setUser creates user name (id == "") or updates user id.
func (c *Client) setUser(ctx context.Context, id, name, password, projectID string) (string, error) {
	user := map[string]any{"password": password, "default_project_id": projectID, "enabled": true}
	if id != "" {
		if _, err := c.do(ctx, http.MethodPatch, "/users/"+url.PathEscape(id), nil, map[string]any{"user": user}, nil, http.StatusOK); err != nil {
			return "", fmt.Errorf("updating user %s: %w", name, err)
		}
		return id, nil
	}
	user["name"], user["domain_id"] = name, DomainID
	return c.create(ctx, "user", "/users", map[string]any{"user": user})
}

// EnsureRole returns the id of global role name, creating it if missing.
// Bootstrap made admin, member and reader (admin implies member, member
// implies reader).
func (c *Client) EnsureRole(ctx context.Context, name string) (string, error) {
	return c.ensure(ctx, "role", "/roles?name="+url.QueryEscape(name), "/roles", roleBody(name))
}

func roleBody(name string) any {
	return map[string]any{"role": map[string]any{"name": name}}
}

// AssignRole gives user userID role roleID on project projectID.
func (c *Client) AssignRole(ctx context.Context, projectID, userID, roleID string) error {
	p := "/projects/" + url.PathEscape(projectID) + "/users/" + url.PathEscape(userID) + "/roles/" + url.PathEscape(roleID)
	if _, err := c.do(ctx, http.MethodPut, p, nil, nil, nil, http.StatusNoContent); err != nil {
		return fmt.Errorf("assigning role %s to user %s on project %s: %w", roleID, userID, projectID, err)
	}
	return nil
}

// EnsureService returns the id of the service of type typ, creating it
// (named name) if there is none.
func (c *Client) EnsureService(ctx context.Context, typ, name string) (string, error) {
	return c.ensure(ctx, "service", "/services?type="+url.QueryEscape(typ), "/services",
		map[string]any{"service": map[string]any{"type": typ, "name": name, "enabled": true}})
}

// Endpoint is a catalog endpoint.
type Endpoint struct {
	ID        string `json:"id,omitempty"`
	ServiceID string `json:"service_id"`
	Interface string `json:"interface"` // public, internal or admin
	Region    string `json:"region_id"`
	URL       string `json:"url"`
}

// Endpoints lists the endpoints of service serviceID.
func (c *Client) Endpoints(ctx context.Context, serviceID string) ([]Endpoint, error) {
	var out struct {
		Endpoints []Endpoint `json:"endpoints"`
	}
	if _, err := c.do(ctx, http.MethodGet, "/endpoints?service_id="+url.QueryEscape(serviceID), nil, nil, &out, http.StatusOK); err != nil {
		return nil, fmt.Errorf("listing endpoints of service %s: %w", serviceID, err)
	}
	return out.Endpoints, nil
}

// CreateEndpoint creates e (its ID is ignored) and returns it with its ID.
func (c *Client) CreateEndpoint(ctx context.Context, e Endpoint) (Endpoint, error) {
	e.ID = ""
	var out struct {
		Endpoint Endpoint `json:"endpoint"`
	}
	body := map[string]any{"endpoint": map[string]any{
		"service_id": e.ServiceID, "interface": e.Interface, "region_id": e.Region, "url": e.URL, "enabled": true,
	}}
	if _, err := c.do(ctx, http.MethodPost, "/endpoints", nil, body, &out, http.StatusCreated); err != nil {
		return Endpoint{}, fmt.Errorf("creating %s endpoint %s: %w", e.Interface, e.URL, err)
	}
	return out.Endpoint, nil
}

// UpdateEndpointURL points endpoint id at u.
func (c *Client) UpdateEndpointURL(ctx context.Context, id, u string) error {
	body := map[string]any{"endpoint": map[string]any{"url": u}}
	if _, err := c.do(ctx, http.MethodPatch, "/endpoints/"+url.PathEscape(id), nil, body, nil, http.StatusOK); err != nil {
		return fmt.Errorf("updating endpoint %s: %w", id, err)
	}
	return nil
}

// DeleteEndpoint deletes endpoint id.
func (c *Client) DeleteEndpoint(ctx context.Context, id string) error {
	if _, err := c.do(ctx, http.MethodDelete, "/endpoints/"+url.PathEscape(id), nil, nil, nil, http.StatusNoContent); err != nil {
		return fmt.Errorf("deleting endpoint %s: %w", id, err)
	}
	return nil
}

// SetEndpoints makes service serviceID's public, internal and admin
// endpoints in region point at u, creating or updating them; u == ""
// deletes the service's endpoints in region instead.
func (c *Client) SetEndpoints(ctx context.Context, serviceID, region, u string) error {
	have, err := c.Endpoints(ctx, serviceID)
	if err != nil {
		return err
	}
	byInterface := map[string]Endpoint{}
	for _, e := range have {
		if e.Region != region {
			continue
		}
		if _, dup := byInterface[e.Interface]; dup || u == "" {
			if err := c.DeleteEndpoint(ctx, e.ID); err != nil {
				return err
			}
			continue
		}
		byInterface[e.Interface] = e
	}
	if u == "" {
		return nil
	}
	for _, iface := range []string{"public", "internal", "admin"} {
		e, ok := byInterface[iface]
		switch {
		case !ok:
			if _, err := c.CreateEndpoint(ctx, Endpoint{ServiceID: serviceID, Interface: iface, Region: region, URL: u}); err != nil {
				return err
			}
		case e.URL != u:
			if err := c.UpdateEndpointURL(ctx, e.ID, u); err != nil {
				return err
			}
		}
	}
	return nil
}

// ensure returns the id of the first thing listPath lists (under the
// plural of kind), or creates one by POSTing body to createPath.
func (c *Client) ensure(ctx context.Context, kind, listPath, createPath string, body any) (string, error) {
	found, err := c.list(ctx, kind, listPath)
	if err != nil {
		return "", err
	}
	if len(found) > 0 {
		return found[0].ID, nil
	}
	return c.create(ctx, kind, createPath, body)
}

// names maps the name of each thing listPath lists to its id.
func (c *Client) names(ctx context.Context, kind, listPath string) (map[string]string, error) {
	found, err := c.list(ctx, kind, listPath)
	if err != nil {
		return nil, err
	}
	ids := map[string]string{}
	for _, r := range found {
		ids[r.Name] = r.ID
	}
	return ids, nil
}

// list returns what GET listPath lists under the plural of kind.
func (c *Client) list(ctx context.Context, kind, listPath string) ([]ref, error) {
	var answer map[string]json.RawMessage // {"<kind>s": [...], "links": {...}}
	if _, err := c.do(ctx, http.MethodGet, listPath, nil, nil, &answer, http.StatusOK); err != nil {
		return nil, fmt.Errorf("listing %ss: %w", kind, err)
	}
	var found []ref
	if raw, ok := answer[kind+"s"]; ok {
		if err := json.Unmarshal(raw, &found); err != nil {
			return nil, fmt.Errorf("listing %ss: decoding: %w", kind, err)
		}
	}
	return found, nil
}

// create POSTs body to createPath and returns the new thing's id (found
// under kind in the answer).
func (c *Client) create(ctx context.Context, kind, createPath string, body any) (string, error) {
	var created map[string]ref
	if _, err := c.do(ctx, http.MethodPost, createPath, nil, body, &created, http.StatusCreated); err != nil {
		return "", fmt.Errorf("creating %s: %w", kind, err)
	}
	id := created[kind].ID
	if id == "" {
		return "", fmt.Errorf("creating %s: answer without an id", kind)
	}
	return id, nil
}

// do sends a request to IdentityURL+path with the client's token, JSON
// body in (if not nil) and extra headers, checks that the status is want
// and decodes the answer into out (if not nil).
func (c *Client) do(ctx context.Context, method, path string, header http.Header, in, out any, want int) (http.Header, error) {
	u := c.IdentityURL + path
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("X-Auth-Token", c.token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, fmt.Errorf("%s %s: reading answer: %w", method, u, err)
	}
	if resp.StatusCode != want {
		se := &StatusError{Method: method, URL: u, StatusCode: resp.StatusCode}
		var kerr struct {
			Error struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if json.Unmarshal(data, &kerr) == nil && kerr.Error.Message != "" {
			se.Message = kerr.Error.Message
		} else {
			se.Message = strings.TrimSpace(string(data))
			if len(se.Message) > 512 {
				se.Message = se.Message[:512] + "…"
			}
		}
		return resp.Header, se
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return nil, fmt.Errorf("%s %s: decoding answer: %w", method, u, err)
		}
	}
	return resp.Header, nil
}
