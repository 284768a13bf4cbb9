package api

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"github.com/google/uuid"
)

// attr says how a body attribute may be used.
type attr struct {
	post, put bool
	adminOnly bool
}

// input is a decoded resource body being validated.
type input struct {
	m        map[string]json.RawMessage
	singular string
}

// checkAttrs rejects unknown attributes, read-only attributes on update, and
// admin-only attributes from tenants, in Neutron's words. It also settles
// tenant_id/project_id: only admins may name another project.
func checkAttrs(in input, spec map[string]attr, create bool, id Identity) *Error {
	var unknown []string
	keys := make([]string, 0, len(in.m))
	for k := range in.m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if k == "tenant_id" || k == "project_id" {
			if !create {
				return badRequest("Cannot update read-only attribute %s", k)
			}
			continue
		}
		a, ok := spec[k]
		if !ok {
			unknown = append(unknown, k)
		}
		if ok && !create && !a.put {
			return badRequest("Cannot update read-only attribute %s", k)
		}
		if ok && create && !a.post {
			return badRequest("Attribute '%s' not allowed in POST", k)
		}
	}
	if len(unknown) > 0 {
		return badRequest("Unrecognized attribute(s) '%s'", strings.Join(unknown, ", "))
	}
	if !id.Admin {
		op := "update_"
		if create {
			op = "create_"
		}
		for _, k := range keys {
			if a, ok := spec[k]; ok && a.adminOnly {
				return policyDenied(fmt.Sprintf("(rule:%s%s and rule:%s%s:%s)", op, in.singular, op, in.singular, k))
			}
		}
	}
	return nil
}

// project returns the project a new resource belongs to.
func (in input) project(id Identity) (string, *Error) {
	var t, p string
	if err := in.str("tenant_id", 255, &t); err != nil {
		return "", err
	}
	if err := in.str("project_id", 255, &p); err != nil {
		return "", err
	}
	if t != "" && p != "" && t != p {
		return "", badRequest("Request contains conflicting tenant_id and project_id.")
	}
	if t == "" {
		t = p
	}
	if t == "" {
		return id.ProjectID, nil
	}
	if t != id.ProjectID && !id.Admin {
		return "", badRequest("Specifying 'project_id' or 'tenant_id' other than the authenticated project in request requires admin or advsvc privileges")
	}
	return t, nil
}

func (in input) has(k string) bool { _, ok := in.m[k]; return ok }

func reasonErr(key, raw, reason string) *Error {
	return badRequest("Invalid input for %s. Reason: %s.", key, fmt.Sprintf(reason, shortRaw(raw)))
}

func shortRaw(raw string) string {
	raw = strings.Trim(raw, `"`)
	if raw == "null" {
		raw = "None"
	}
	if len(raw) > 64 {
		raw = raw[:64] + "..."
	}
	return raw
}

// str reads a string attribute into dst if present (max 0 = unlimited).
func (in input) str(key string, max int, dst *string) *Error {
	raw, ok := in.m[key]
	if !ok {
		return nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return reasonErr(key, string(raw), "'%s' is not a valid string")
	}
	if strings.ContainsRune(s, 0) {
		// PostgreSQL cannot store it; refused on every backend alike.
		return reasonErr(key, string(raw), "'%s' contains a NUL character")
	}
	if max > 0 && len(s) > max {
		return badRequest("Invalid input for %s. Reason: '%s' exceeds maximum length of %d.", key, shortRaw(s), max)
	}
	*dst = s
	return nil
}

// nullableStr reads a string-or-null attribute; set reports presence.
func (in input) nullableStr(key string, dst **string) (set bool, err *Error) {
	raw, ok := in.m[key]
	if !ok {
		return false, nil
	}
	if string(raw) == "null" {
		*dst = nil
		return true, nil
	}
	var s string
	if err := in.str(key, 255, &s); err != nil {
		return true, err
	}
	*dst = &s
	return true, nil
}

// boolean reads a boolean the way Neutron's convert_to_boolean does.
func (in input) boolean(key string, dst *bool) *Error {
	raw, ok := in.m[key]
	if !ok {
		return nil
	}
	v, err := parseBool(raw)
	if err != nil {
		return badRequest("Invalid input for %s. Reason: '%s' cannot be converted to boolean.", key, shortRaw(string(raw)))
	}
	*dst = v
	return nil
}

func parseBool(raw json.RawMessage) (bool, error) {
	var b bool
	if err := json.Unmarshal(raw, &b); err == nil {
		return b, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		switch strings.ToLower(s) {
		case "true", "1":
			return true, nil
		case "false", "0":
			return false, nil
		}
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err == nil {
		switch n.String() {
		case "1":
			return true, nil
		case "0":
			return false, nil
		}
	}
	return false, fmt.Errorf("not a boolean")
}

// integer reads an integer (JSON number or numeric string).
func (in input) integer(key string, dst *int) *Error {
	raw, ok := in.m[key]
	if !ok {
		return nil
	}
	var n int
	if err := json.Unmarshal(raw, &n); err == nil {
		*dst = n
		return nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		if v, err := strconv.Atoi(s); err == nil {
			*dst = v
			return nil
		}
	}
	return reasonErr(key, string(raw), "'%s' is not an integer")
}

// uuidAttr reads a UUID attribute.
func (in input) uuidAttr(key string, dst *string) *Error {
	raw, ok := in.m[key]
	if !ok {
		return nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil || !isUUID(s) {
		return reasonErr(key, string(raw), "'%s' is not a valid UUID")
	}
	*dst = s
	return nil
}

func isUUID(s string) bool {
	_, err := uuid.Parse(s)
	return err == nil && len(s) == 36
}

// ipv4 parses an IPv4 address attribute value.
func parseIPv4(key, s string) (netip.Addr, *Error) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return netip.Addr{}, invalidInput("'%s' is not a valid IP address.", shortRaw(s))
	}
	return a, nil
}

// parseCIDR parses an IPv4 CIDR.
func parseCIDR(s string) (netip.Prefix, *Error) {
	p, err := netip.ParsePrefix(s)
	if err != nil || !p.Addr().Is4() {
		return netip.Prefix{}, invalidInput("%s is not in a CIDR format.", shortRaw(s))
	}
	return p, nil
}

// decode unmarshals an attribute into dst with a Neutron-style error.
func (in input) decode(key string, dst any, what string) *Error {
	raw, ok := in.m[key]
	if !ok {
		return nil
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		return reasonErr(key, string(raw), "'%s' is not "+what)
	}
	return nil
}
