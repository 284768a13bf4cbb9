package oslo

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/google/uuid"
)

// EnvelopeVersion is the oslo.messaging message envelope version spoken here.
const EnvelopeVersion = "2.0"

const (
	versionKey = "oslo.version"
	messageKey = "oslo.message"
	contextPre = "_context_"
)

// ErrMalformed marks a message from the bus that cannot be understood.
var ErrMalformed = errors.New("oslo: malformed message")

// Request is an RPC request (call or cast) as carried inside the envelope.
type Request struct {
	Method    string
	Args      json.RawMessage // a JSON object; never nil after decoding
	Namespace string          // "" = none
	Version   string          // "" = none (servers treat it as "1.0")
	Context   map[string]any  // the _context_* entries, prefix removed
	UniqueID  string
	// Calls only.
	MsgID   string
	ReplyQ  string
	Timeout *float64 // _timeout: call-monitor timeout in seconds, nil if null
}

// Reply is a reply to a call.
type Reply struct {
	Result   json.RawMessage // JSON "null" or absent → nil
	Failure  *Failure
	Ending   bool
	MsgID    string
	UniqueID string
}

// Failure is a remote exception as oslo.messaging serializes it.
type Failure struct {
	Class   string         `json:"class"`
	Module  string         `json:"module"`
	Message string         `json:"message"`
	Tb      []string       `json:"tb"`
	Args    []any          `json:"args"`
	Kwargs  map[string]any `json:"kwargs"`
}

// RemoteError is the error a call returns when the remote side raised an
// exception (or a Go handler returned an error). Handlers may return one to
// choose the class and module the caller sees.
type RemoteError struct {
	Class     string
	Module    string
	Message   string
	Traceback []string
}

func (e *RemoteError) Error() string {
	name := e.Class
	if e.Module != "" && e.Module != "builtins" && e.Module != "exceptions" {
		name = e.Module + "." + e.Class
	}
	return fmt.Sprintf("remote error: %s: %s", name, e.Message)
}

// Errorf returns a *RemoteError of the given Python class and module.
func Errorf(module, class, format string, a ...any) *RemoteError {
	return &RemoteError{Module: module, Class: class, Message: fmt.Sprintf(format, a...)}
}

const dispatcherModule = "oslo_messaging.rpc.dispatcher"

// NoSuchMethod is what oslo's dispatcher raises for a method no compatible
// endpoint has.
func NoSuchMethod(method string) *RemoteError {
	return Errorf(dispatcherModule, "NoSuchMethod", "Endpoint does not support RPC method %s", method)
}

// UnsupportedVersion is what oslo's dispatcher raises when no endpoint
// matches the requested namespace and version.
func UnsupportedVersion(version, method string) *RemoteError {
	msg := "Endpoint does not support RPC version " + version
	if method != "" {
		msg += ". Attempted method: " + method
	}
	return &RemoteError{Module: dispatcherModule, Class: "UnsupportedVersion", Message: msg}
}

func (f *Failure) remoteError() *RemoteError {
	return &RemoteError{Class: f.Class, Module: f.Module, Message: f.Message, Traceback: f.Tb}
}

// failureFor converts a handler error to the failure sent back.
func failureFor(err error) *Failure {
	var re *RemoteError
	if !errors.As(err, &re) {
		re = &RemoteError{Module: "builtins", Class: "RuntimeError", Message: err.Error()}
	}
	tb := re.Traceback
	if tb == nil {
		tb = []string{}
	}
	return &Failure{Class: re.Class, Module: re.Module, Message: re.Message, Tb: tb,
		Args: []any{re.Message}, Kwargs: map[string]any{}}
}

// newID is a uuid4 in hex without dashes, as Python's uuid.uuid4().hex.
func newID() string {
	return strings.ReplaceAll(uuid.NewString(), "-", "")
}

// wrapEnvelope puts a JSON-encoded message into the 2.0 envelope.
func wrapEnvelope(inner []byte) ([]byte, error) {
	return json.Marshal(map[string]string{versionKey: EnvelopeVersion, messageKey: string(inner)})
}

// unwrapEnvelope returns the message object inside body. As oslo does, an
// object without the envelope keys is taken as an old (1.0) message itself.
func unwrapEnvelope(body []byte) (map[string]json.RawMessage, error) {
	var outer map[string]json.RawMessage
	if err := json.Unmarshal(body, &outer); err != nil {
		return nil, fmt.Errorf("%w: body is not a JSON object: %v", ErrMalformed, err)
	}
	rawVer, hasVer := outer[versionKey]
	rawMsg, hasMsg := outer[messageKey]
	if !hasVer || !hasMsg {
		if outer == nil {
			return nil, fmt.Errorf("%w: body is null", ErrMalformed)
		}
		return outer, nil
	}
	var ver, msg string
	if err := json.Unmarshal(rawVer, &ver); err != nil {
		return nil, fmt.Errorf("%w: %s is not a string", ErrMalformed, versionKey)
	}
	if ok, err := versionCompatible(EnvelopeVersion, ver); err != nil || !ok {
		return nil, fmt.Errorf("%w: unsupported envelope version %q", ErrMalformed, ver)
	}
	if err := json.Unmarshal(rawMsg, &msg); err != nil {
		return nil, fmt.Errorf("%w: %s is not a string", ErrMalformed, messageKey)
	}
	var inner map[string]json.RawMessage
	if err := json.Unmarshal([]byte(msg), &inner); err != nil || inner == nil {
		return nil, fmt.Errorf("%w: %s is not a JSON object: %v", ErrMalformed, messageKey, err)
	}
	return inner, nil
}

// EncodeRequest returns the envelope body of r.
func EncodeRequest(r *Request) ([]byte, error) {
	m := make(map[string]any, 8+len(r.Context))
	for k, v := range r.Context {
		m[contextPre+k] = v
	}
	m["method"] = r.Method
	args := r.Args
	if len(args) == 0 {
		args = json.RawMessage("{}")
	}
	m["args"] = args
	if r.Namespace != "" {
		m["namespace"] = r.Namespace
	}
	if r.Version != "" {
		m["version"] = r.Version
	}
	m["_unique_id"] = r.UniqueID
	if r.MsgID != "" {
		m["_msg_id"] = r.MsgID
		m["_reply_q"] = r.ReplyQ
		m["_timeout"] = r.Timeout
	}
	inner, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("oslo: encoding request %s: %w", r.Method, err)
	}
	return wrapEnvelope(inner)
}

// DecodeRequest parses an envelope body into a Request.
func DecodeRequest(body []byte) (*Request, error) {
	m, err := unwrapEnvelope(body)
	if err != nil {
		return nil, err
	}
	r := &Request{Context: map[string]any{}}
	for k, v := range m {
		if name, ok := strings.CutPrefix(k, contextPre); ok {
			var val any
			if err := json.Unmarshal(v, &val); err != nil {
				return nil, fmt.Errorf("%w: context key %s: %v", ErrMalformed, name, err)
			}
			r.Context[name] = val
		}
	}
	str := func(key string, dst *string) error {
		v, ok := m[key]
		if !ok || string(v) == "null" {
			return nil
		}
		if err := json.Unmarshal(v, dst); err != nil {
			return fmt.Errorf("%w: %s is not a string", ErrMalformed, key)
		}
		return nil
	}
	for key, dst := range map[string]*string{"method": &r.Method, "namespace": &r.Namespace,
		"version": &r.Version, "_unique_id": &r.UniqueID, "_msg_id": &r.MsgID, "_reply_q": &r.ReplyQ} {
		if err := str(key, dst); err != nil {
			return r, err
		}
	}
	if v, ok := m["_timeout"]; ok && string(v) != "null" {
		var t float64
		if err := json.Unmarshal(v, &t); err == nil {
			r.Timeout = &t
		}
	}
	r.Args = json.RawMessage("{}")
	if v, ok := m["args"]; ok && string(v) != "null" {
		if t := bytes.TrimSpace(v); len(t) == 0 || t[0] != '{' {
			return r, fmt.Errorf("%w: args is not an object", ErrMalformed)
		}
		r.Args = v
	}
	if r.Method == "" {
		return r, fmt.Errorf("%w: no method", ErrMalformed)
	}
	return r, nil
}

// EncodeReply returns the envelope body of r.
func EncodeReply(r *Reply) ([]byte, error) {
	m := map[string]any{"result": nil, "failure": nil, "ending": r.Ending,
		"_msg_id": r.MsgID, "_unique_id": r.UniqueID}
	if len(r.Result) > 0 {
		m["result"] = r.Result
	}
	if r.Failure != nil {
		f, err := json.Marshal(r.Failure)
		if err != nil {
			return nil, fmt.Errorf("oslo: encoding failure: %w", err)
		}
		m["failure"] = string(f)
	}
	inner, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("oslo: encoding reply to %s: %w", r.MsgID, err)
	}
	return wrapEnvelope(inner)
}

// DecodeReply parses an envelope body into a Reply.
func DecodeReply(body []byte) (*Reply, error) {
	m, err := unwrapEnvelope(body)
	if err != nil {
		return nil, err
	}
	r := &Reply{}
	if v, ok := m["_msg_id"]; ok {
		if err := json.Unmarshal(v, &r.MsgID); err != nil {
			return nil, fmt.Errorf("%w: _msg_id is not a string", ErrMalformed)
		}
	}
	if v, ok := m["_unique_id"]; ok {
		_ = json.Unmarshal(v, &r.UniqueID)
	}
	if v, ok := m["ending"]; ok {
		_ = json.Unmarshal(v, &r.Ending) // non-bool: false, as Python's truthiness mostly agrees
	}
	if v, ok := m["result"]; ok && string(v) != "null" {
		r.Result = v
	}
	if v, ok := m["failure"]; ok && string(v) != "null" {
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return nil, fmt.Errorf("%w: failure is not a string", ErrMalformed)
		}
		if s != "" {
			f := &Failure{}
			if err := json.Unmarshal([]byte(s), f); err != nil {
				// Keep what we have: the caller still learns the call failed.
				f = &Failure{Class: "RemoteError", Message: s}
			}
			r.Failure = f
		}
	}
	return r, nil
}

// versionCompatible reports whether a server implementing imp can serve a
// request for version req (oslo_messaging._utils.version_is_compatible):
// same major, and req's minor (then revision) not above imp's.
func versionCompatible(imp, req string) (bool, error) {
	ip, err := parseVersion(imp)
	if err != nil {
		return false, err
	}
	rp, err := parseVersion(req)
	if err != nil {
		return false, err
	}
	switch {
	case rp[0] != ip[0]:
		return false, nil
	case rp[1] > ip[1]:
		return false, nil
	case rp[1] == ip[1] && rp[2] > ip[2]:
		return false, nil
	}
	return true, nil
}

func parseVersion(v string) ([3]int, error) {
	var out [3]int
	parts := strings.Split(v, ".")
	if len(parts) < 2 || len(parts) > 3 {
		return out, fmt.Errorf("invalid version %q", v)
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil {
			return out, fmt.Errorf("invalid version %q", v)
		}
		out[i] = n
	}
	return out, nil
}
