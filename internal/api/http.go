// Package api is l3ha's Neutron v2.0-compatible REST API: networks, subnets,
// ports, routers (HA, gateway, interfaces, extra routes), floating IPs,
// agents and the L3 agent scheduler calls, with Neutron's status codes,
// NeutronError bodies, policy (admin-only ha/distributed/provider
// attributes, tenant isolation as 404), filters and fields.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/l3ha/l3ha/internal/ha"
	"github.com/l3ha/l3ha/internal/ipam"
	"github.com/l3ha/l3ha/internal/store"
)

// MaxBodyBytes is Neutron's default max_request_body_size.
const MaxBodyBytes = 114688

// Options are API behaviours set by server configuration.
type Options struct {
	DefaultHA bool          // l3_ha
	VNIs      ipam.VNIRange // tenant VXLAN segment ids
}

// API serves the Neutron API from a store.
type API struct {
	db   *store.DB
	ha   *ha.Manager
	auth Authenticator
	opts Options
	log  *slog.Logger
}

// New returns the API.
func New(db *store.DB, m *ha.Manager, auth Authenticator, opts Options, log *slog.Logger) *API {
	return &API{db: db, ha: m, auth: auth, opts: opts, log: log}
}

// Error is a Neutron API error: HTTP status and the NeutronError body.
type Error struct {
	Status  int
	Type    string
	Message string
}

func (e *Error) Error() string { return e.Type + ": " + e.Message }

func errf(status int, typ, format string, args ...any) *Error {
	return &Error{Status: status, Type: typ, Message: fmt.Sprintf(format, args...)}
}

func badRequest(format string, args ...any) *Error {
	return errf(http.StatusBadRequest, "HTTPBadRequest", format, args...)
}

func invalidInput(format string, args ...any) *Error {
	return errf(http.StatusBadRequest, "InvalidInput", "Invalid input for operation: "+format, args...)
}

func policyDenied(rule string) *Error {
	return errf(http.StatusForbidden, "PolicyNotAuthorized", "%s is disallowed by policy", rule)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if v != nil {
		_ = json.NewEncoder(w).Encode(v)
	}
}

func (a *API) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var e *Error
	if !errors.As(err, &e) {
		var nea *ha.ErrNotEnoughAgents
		switch {
		case errors.As(err, &nea):
			e = errf(http.StatusConflict, "HANotEnoughAvailableAgents", "%s", nea.Error())
		case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
			e = errf(http.StatusServiceUnavailable, "HTTPServiceUnavailable", "The request was cancelled or timed out.")
		case store.IsUniqueViolation(err):
			a.log.Warn("request conflicted with a concurrent change", "method", r.Method, "path", r.URL.Path, "err", err)
			e = errf(http.StatusConflict, "Conflict", "The request conflicted with a concurrent change; retry it.")
		default:
			a.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
			e = errf(http.StatusInternalServerError, "HTTPInternalServerError", "Request Failed: internal server error while processing your request.")
		}
	}
	writeJSON(w, e.Status, map[string]any{"NeutronError": map[string]any{"type": e.Type, "message": e.Message, "detail": ""}})
}

// Handler returns the HTTP handler of the API.
func (a *API) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		w.Header().Set("X-Openstack-Request-Id", "req-"+uuid.NewString())
		rec := &statusRecorder{ResponseWriter: w, status: 200}
		a.serve(rec, r)
		a.log.Debug("api request", "method", r.Method, "path", r.URL.Path, "status", rec.status, "duration", time.Since(start))
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

var errNotFoundResource = errf(http.StatusNotFound, "HTTPNotFound", "The resource could not be found.")
var errMethod = errf(http.StatusMethodNotAllowed, "HTTPMethodNotAllowed", "The server could not comply with the request since it is either malformed or otherwise incorrect.")

func (a *API) serve(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimSuffix(strings.TrimSuffix(r.URL.Path, ".json"), "/")
	if path == "" {
		if r.Method != http.MethodGet {
			a.writeError(w, r, errMethod)
			return
		}
		a.versions(w, r)
		return
	}
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	if parts[0] != "v2.0" {
		a.writeError(w, r, errNotFoundResource)
		return
	}
	id, err := a.auth.Identify(r)
	if err != nil {
		var e *Error
		if errors.As(err, &e) && e.Status == http.StatusUnauthorized {
			challenge := "Keystone uri='unused'"
			if c, ok := a.auth.(challenger); ok {
				challenge = c.WWWAuthenticate()
			}
			w.Header().Set("WWW-Authenticate", challenge)
			http.Error(w, "401 Unauthorized\n\nThis server could not verify that you are authorized to access the document you requested.", http.StatusUnauthorized)
			return
		}
		a.writeError(w, r, err)
		return
	}
	ctx := r.Context()
	rest := parts[1:]
	if len(rest) == 0 {
		a.resourcesIndex(w, r)
		return
	}
	if rest[0] == "extensions" {
		a.extensions(w, r, rest[1:])
		return
	}
	res, ok := resources[rest[0]]
	if !ok {
		a.writeError(w, r, errNotFoundResource)
		return
	}
	if id.ReadOnly && r.Method != http.MethodGet && r.Method != http.MethodHead {
		a.writeError(w, r, policyDenied("rule:"+writeRule(r.Method, res, rest[1:])))
		return
	}
	for i, seg := range rest[1:] {
		// No id holds invalid UTF-8 or NUL (PostgreSQL cannot even compare
		// them): such an id is not found, not an internal error.
		if !utf8.ValidString(seg) || strings.ContainsRune(seg, 0) {
			if i == 0 {
				a.writeError(w, r, res.notFound(seg))
			} else {
				a.writeError(w, r, errNotFoundResource)
			}
			return
		}
	}
	var status int
	var out any
	switch {
	case len(rest) == 1:
		switch r.Method {
		case http.MethodGet:
			status, out, err = http.StatusOK, nil, nil
			out, err = a.list(ctx, id, res, r)
		case http.MethodPost:
			if res.create == nil {
				err = errMethod
				break
			}
			status = http.StatusCreated
			out, err = a.create(ctx, id, res, r)
		case http.MethodDelete:
			err = res.notFound("None")
		default:
			err = errMethod
		}
	case len(rest) == 2:
		switch r.Method {
		case http.MethodGet:
			status = http.StatusOK
			out, err = a.show(ctx, id, res, rest[1], r)
		case http.MethodPut:
			if res.update == nil {
				err = errMethod
				break
			}
			var body map[string]json.RawMessage
			if body, err = readResourceBody(r, res.singular); err == nil {
				status = http.StatusOK
				out, err = res.update(a, ctx, id, rest[1], body)
			}
		case http.MethodDelete:
			if res.delete == nil {
				err = errMethod
				break
			}
			status = http.StatusNoContent
			err = res.delete(a, ctx, id, rest[1])
		default:
			err = errMethod
		}
	default:
		status, out, err = a.subResource(ctx, id, res, rest[1], rest[2:], r)
	}
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if status == http.StatusNoContent {
		w.WriteHeader(status)
		return
	}
	writeJSON(w, status, out)
}

// writeRule names the Neutron policy rule a write would be checked
// against, for the 403 a reader gets.
func writeRule(method string, res *resource, rest []string) string {
	verb := map[string]string{http.MethodPost: "create", http.MethodPut: "update", http.MethodDelete: "delete"}[method]
	if verb == "" {
		verb = strings.ToLower(method)
	}
	switch {
	case len(rest) >= 2 && strings.HasSuffix(rest[1], "_router_interface"):
		return rest[1]
	case len(rest) >= 2:
		return verb + "_" + strings.TrimSuffix(rest[1], "s")
	}
	return verb + "_" + res.singular
}

func (a *API) subResource(ctx context.Context, id Identity, res *resource, memberID string, sub []string, r *http.Request) (int, any, error) {
	switch {
	case res.collection == "routers" && len(sub) == 1 && (sub[0] == "add_router_interface" || sub[0] == "remove_router_interface"):
		if r.Method != http.MethodPut {
			return 0, nil, errMethod
		}
		body, err := readRawBody(r)
		if err != nil {
			return 0, nil, err
		}
		out, err := a.routerInterface(ctx, id, memberID, sub[0] == "add_router_interface", body)
		return http.StatusOK, out, err
	case res.collection == "routers" && len(sub) == 1 && sub[0] == "l3-agents":
		if r.Method != http.MethodGet {
			return 0, nil, errMethod
		}
		out, err := a.routerL3Agents(ctx, id, memberID)
		return http.StatusOK, out, err
	case res.collection == "routers" && len(sub) == 1 && sub[0] == "ha_transitions":
		if r.Method != http.MethodGet {
			return 0, nil, errMethod
		}
		out, err := a.routerHATransitions(ctx, id, memberID, r.URL.Query())
		return http.StatusOK, out, err
	case res.collection == "routers" && len(sub) == 1 && sub[0] == "switchover":
		if r.Method != http.MethodPost {
			return 0, nil, errMethod
		}
		body, err := readRawBody(r)
		if err != nil {
			return 0, nil, err
		}
		out, err := a.routerSwitchover(ctx, id, memberID, body)
		return http.StatusAccepted, out, err
	case res.collection == "agents" && len(sub) >= 1 && sub[0] == "l3-routers":
		switch {
		case len(sub) == 1 && r.Method == http.MethodGet:
			out, err := a.agentL3Routers(ctx, id, memberID)
			return http.StatusOK, out, err
		case len(sub) == 1 && r.Method == http.MethodPost:
			body, err := readRawBody(r)
			if err != nil {
				return 0, nil, err
			}
			err = a.agentAddRouter(ctx, id, memberID, body)
			return http.StatusCreated, map[string]any{}, err
		case len(sub) == 2 && r.Method == http.MethodDelete:
			return http.StatusNoContent, nil, a.agentRemoveRouter(ctx, id, memberID, sub[1])
		}
		return 0, nil, errMethod
	}
	return 0, nil, errNotFoundResource
}

func readRawBody(r *http.Request) (map[string]json.RawMessage, error) {
	// The whole body is read, so that a body over the limit is refused even
	// when it starts with a valid document, and anything after the document
	// (even "]") is invalid.
	r.Body = http.MaxBytesReader(nil, r.Body, MaxBodyBytes)
	b, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, errf(http.StatusRequestEntityTooLarge, "HTTPRequestEntityTooLarge", "Request is too large.")
		}
		return nil, badRequest("Body contains invalid data")
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil || m == nil {
		return nil, badRequest("Body contains invalid data")
	}
	return m, nil
}

// readResourceBody reads {"<singular>": {...}} and returns the inner object.
func readResourceBody(r *http.Request, singular string) (map[string]json.RawMessage, error) {
	outer, err := readRawBody(r)
	if err != nil {
		return nil, err
	}
	raw, ok := outer[singular]
	if !ok {
		return nil, badRequest("Unable to find '%s' in request body", singular)
	}
	var inner map[string]json.RawMessage
	if err := json.Unmarshal(raw, &inner); err != nil || inner == nil {
		return nil, badRequest("Body contains invalid data")
	}
	return inner, nil
}

func (a *API) versions(w http.ResponseWriter, r *http.Request) {
	base := baseURL(r)
	writeJSON(w, http.StatusOK, map[string]any{"versions": []any{map[string]any{
		"id": "v2.0", "status": "CURRENT",
		"links": []any{map[string]any{"href": base + "/v2.0/", "rel": "self"}},
	}}})
}

func (a *API) resourcesIndex(w http.ResponseWriter, r *http.Request) {
	base := baseURL(r)
	var out []any
	for _, name := range resourceOrder {
		res := resources[name]
		out = append(out, map[string]any{
			"collection": res.collection, "name": res.singular,
			"links": []any{map[string]any{"href": base + "/v2.0/" + res.collection, "rel": "self"}},
		})
	}
	writeJSON(w, http.StatusOK, map[string]any{"resources": out})
}

func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}
