package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/l3ha/l3ha/internal/store"
)

// resource describes one collection of the API.
type resource struct {
	collection, singular string
	notFound             func(id string) *Error
	// load renders every object of the collection the identity may see.
	load func(a *API, tx *store.Tx, id Identity) ([]map[string]any, error)
	// get renders one object, or returns notFound when invisible.
	get    func(a *API, tx *store.Tx, id Identity, memberID string) (map[string]any, error)
	create func(a *API, ctx context.Context, id Identity, body map[string]json.RawMessage) (any, error)
	update func(a *API, ctx context.Context, id Identity, memberID string, body map[string]json.RawMessage) (any, error)
	delete func(a *API, ctx context.Context, id Identity, memberID string) error
	// sample renders an object of the collection as an admin sees it:
	// its keys are the attributes a list may be filtered on.
	sample func() map[string]any
}

var resourceOrder = []string{"networks", "subnets", "ports", "routers", "floatingips", "agents"}

var resources = map[string]*resource{}

func register(r *resource) { resources[r.collection] = r }

func (a *API) list(ctx context.Context, id Identity, res *resource, r *http.Request) (any, error) {
	var objs []map[string]any
	err := a.db.Read(ctx, func(tx *store.Tx) error {
		var err error
		objs, err = res.load(a, tx, id)
		return err
	})
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	if err := validateFilters(res, q); err != nil {
		return nil, err
	}
	objs, err = applyFilters(objs, q)
	if err != nil {
		return nil, err
	}
	sort.SliceStable(objs, func(i, j int) bool { return fmt.Sprint(objs[i]["id"]) < fmt.Sprint(objs[j]["id"]) })
	out := map[string]any{}
	// Pagination: a page follows the marker, or with page_reverse precedes
	// it (the page nearest the marker, still in ascending order), as
	// Neutron pages.
	reverse := false
	if v := q.Get("page_reverse"); v != "" {
		b, err := parseBool(json.RawMessage(strconv.Quote(v)))
		if err != nil {
			return nil, badRequest("Invalid input for page_reverse. Reason: '%s' cannot be converted to boolean.", shortRaw(v))
		}
		reverse = b
	}
	if marker := q.Get("marker"); marker != "" {
		if reverse {
			k := sort.Search(len(objs), func(i int) bool { return fmt.Sprint(objs[i]["id"]) >= marker })
			objs = objs[:k]
		} else {
			k := sort.Search(len(objs), func(i int) bool { return fmt.Sprint(objs[i]["id"]) > marker })
			objs = objs[k:]
		}
	}
	n, err := parseLimit(q)
	if err != nil {
		return nil, err
	}
	if n > 0 && len(objs) > n {
		rel, markerObj := "next", map[string]any(nil)
		if reverse {
			objs = objs[len(objs)-n:]
			rel, markerObj = "previous", objs[0]
		} else {
			objs = objs[:n]
			markerObj = objs[n-1]
		}
		next := url.Values{}
		for k, v := range q {
			next[k] = v
		}
		next.Set("marker", fmt.Sprint(markerObj["id"]))
		out[res.collection+"_links"] = []any{map[string]any{"rel": rel, "href": baseURL(r) + "/v2.0/" + res.collection + "?" + next.Encode()}}
	}
	fields := q["fields"]
	list := make([]any, len(objs))
	for i, o := range objs {
		list[i] = selectFields(o, fields)
	}
	out[res.collection] = list
	return out, nil
}

// parseLimit reads ?limit= as Neutron does: an integer 0 or greater, 0 (or
// none) meaning no limit.
func parseLimit(q url.Values) (int, error) {
	l := q.Get("limit")
	if l == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(l)
	if err != nil || n < 0 {
		return 0, badRequest("Limit must be an integer 0 or greater and not '%s'", l)
	}
	return n, nil
}

func (a *API) show(ctx context.Context, id Identity, res *resource, memberID string, r *http.Request) (any, error) {
	var obj map[string]any
	err := a.db.Read(ctx, func(tx *store.Tx) error {
		var err error
		obj, err = res.get(a, tx, id, memberID)
		return err
	})
	if err != nil {
		return nil, err
	}
	return map[string]any{res.singular: selectFields(obj, r.URL.Query()["fields"])}, nil
}

// validateFilters refuses filters on attributes the collection does not
// have, as Neutron does with the filter-validation extension:
// "['name'] is invalid attribute for filtering". Every attribute an admin
// sees may be filtered on (a superset of Neutron's filterable ones); one
// the caller does not see matches nothing (applyFilters).
//
// An attribute of an extension l3ha does not implement (security_groups,
// port_security_enabled, tags, …) is not shown, so not a filter either: a
// 400 too. changed_since (standard-attr-timestamp) filters the resources
// with timestamps.
func validateFilters(res *resource, q url.Values) *Error {
	known := res.sample()
	_, timestamped := known["updated_at"]
	var invalid []string
	for k := range q {
		if _, ok := known[k]; !ok && !nonFilterParams[k] && !(k == changedSince && timestamped) {
			invalid = append(invalid, "'"+k+"'")
		}
	}
	if len(invalid) == 0 {
		return nil
	}
	sort.Strings(invalid)
	return badRequest("[%s] is invalid attribute for filtering", strings.Join(invalid, ", "))
}

// nonFilterParams are the query parameters that are not filters. sort_key
// and sort_dir are ignored (lists are in id order), as in a Neutron
// without the sorting extension, which l3ha does not list.
var nonFilterParams = map[string]bool{"fields": true, "limit": true, "marker": true, "sort_key": true, "sort_dir": true, "page_reverse": true}

const changedSince = "changed_since"

// parseChangedSince reads standard-attr-timestamp's changed_since the way
// oslo's parse_isotime does (RFC 3339, fractions and an offset optional;
// no offset is UTC). Views show whole seconds, so the time is truncated to
// one: a change within that second is listed.
func parseChangedSince(v string) (time.Time, *Error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02T15:04:05"} {
		if t, err := time.Parse(layout, v); err == nil {
			return t.UTC().Truncate(time.Second), nil
		}
	}
	return time.Time{}, invalidInput("The input %s must be in the following format: YYYY-MM-DDTHH:MM:SSZ", changedSince)
}

// applyFilters keeps the objects whose attributes match every query filter;
// several values of one filter match any of them; booleans compare
// case-insensitively. Filters on attributes the object does not show match
// nothing except "tenant_id"/"project_id" aliases, which are always shown.
func applyFilters(objs []map[string]any, q url.Values) ([]map[string]any, error) {
	var since time.Time
	if v, ok := q[changedSince]; ok {
		t, err := parseChangedSince(v[0])
		if err != nil {
			return nil, err
		}
		since = t
	}
	var out []map[string]any
	for _, o := range objs {
		ok := true
		for k, vals := range q {
			if nonFilterParams[k] {
				continue
			}
			if k == changedSince {
				u, err := time.Parse(time.RFC3339, fmt.Sprint(o["updated_at"]))
				if err != nil || u.Before(since) {
					ok = false
					break
				}
				continue
			}
			if k == "fixed_ips" {
				if !matchFixedIPs(o["fixed_ips"], vals) {
					ok = false
				}
				continue
			}
			v, present := o[k]
			if !present {
				ok = false
				break
			}
			if !matchValue(v, vals) {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, o)
		}
	}
	return out, nil
}

func matchValue(v any, vals []string) bool {
	for _, want := range vals {
		switch x := v.(type) {
		case bool:
			if strings.EqualFold(want, strconv.FormatBool(x)) || (want == "1" && x) || (want == "0" && !x) {
				return true
			}
		case nil:
			if want == "" || strings.EqualFold(want, "none") || strings.EqualFold(want, "null") {
				return true
			}
		case *string:
			if x == nil && want == "" || x != nil && *x == want {
				return true
			}
		case []string:
			for _, s := range x {
				if s == want {
					return true
				}
			}
		default:
			if fmt.Sprint(x) == want {
				return true
			}
		}
	}
	return false
}

// matchFixedIPs handles ports?fixed_ips=ip_address=X&fixed_ips=subnet_id=Y
// (and ip_address_substr=Z, the ip-substring-filtering extension) as
// Neutron's query does: some one address of the port matches every key
// given, and a key given several times matches any of its values.
func matchFixedIPs(v any, vals []string) bool {
	ips, _ := v.([]store.FixedIP)
	want := map[string][]string{}
	for _, f := range vals {
		key, val, _ := strings.Cut(f, "=")
		want[key] = append(want[key], val)
	}
	matches := func(got string, vals []string, substr bool) bool {
		if vals == nil {
			return true
		}
		for _, w := range vals {
			if got == w || substr && strings.Contains(got, w) {
				return true
			}
		}
		return false
	}
	for _, ip := range ips {
		if matches(ip.IPAddress, want["ip_address"], false) && matches(ip.SubnetID, want["subnet_id"], false) &&
			matches(ip.IPAddress, want["ip_address_substr"], true) {
			return true
		}
	}
	return false
}

func selectFields(o map[string]any, fields []string) map[string]any {
	if len(fields) == 0 {
		return o
	}
	out := map[string]any{}
	for _, f := range fields {
		for _, name := range strings.Split(f, ",") {
			if v, ok := o[name]; ok {
				out[name] = v
			}
		}
	}
	return out
}

func ts(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05Z") }

// agentTS is the format Neutron uses for agent timestamps.
func agentTS(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05") }

// standard attributes every resource shows.
func std(o map[string]any, id, project string, revision int, created, updated time.Time) map[string]any {
	o["id"] = id
	o["project_id"] = project
	o["tenant_id"] = project
	o["revision_number"] = revision
	o["created_at"] = ts(created)
	o["updated_at"] = ts(updated)
	// No "tags": standard-attr-tag is not implemented.
	return o
}

// visible reports whether a project-owned object is visible to id.
func visible(id Identity, project string) bool { return id.Admin || project == id.ProjectID }

// owns reports whether id may change a project-owned object.
func owns(id Identity, project string) bool { return id.Admin || project == id.ProjectID }

func strOrNil(p *string) any {
	if p == nil {
		return nil
	}
	return *p
}

// create is POST on a collection: one object ({"network": {...}}) or, in
// bulk, several ({"networks": [{...}, {...}]}, each item bare or wrapped in
// its singular key). A bulk request is one transaction, all or nothing, as
// Neutron's ML2 native bulk: when one object cannot be created none is.
func (a *API) create(ctx context.Context, id Identity, res *resource, r *http.Request) (any, error) {
	outer, err := readRawBody(r)
	if err != nil {
		return nil, err
	}
	rawList, bulk := outer[res.collection]
	if !bulk {
		raw, ok := outer[res.singular]
		if !ok {
			return nil, badRequest("Unable to find '%s' in request body", res.singular)
		}
		body, err := decodeObject(raw)
		if err != nil {
			return nil, err
		}
		return res.create(a, ctx, id, body)
	}
	var items []json.RawMessage
	if err := json.Unmarshal(rawList, &items); err != nil {
		return nil, badRequest("Body contains invalid data")
	}
	if len(items) == 0 {
		return nil, badRequest("Resources required")
	}
	bodies := make([]map[string]json.RawMessage, 0, len(items))
	for _, raw := range items {
		body, err := decodeObject(raw)
		if err != nil {
			return nil, err
		}
		if inner, ok := body[res.singular]; ok {
			if body, err = decodeObject(inner); err != nil {
				return nil, err
			}
		}
		bodies = append(bodies, body)
	}
	var created []any
	_, err = a.db.Write(ctx, func(tx *store.Tx) error {
		created = make([]any, 0, len(bodies))
		inTx := context.WithValue(ctx, txKey{}, tx)
		for _, body := range bodies {
			out, err := res.create(a, inTx, id, body)
			if err != nil {
				return err
			}
			created = append(created, out.(map[string]any)[res.singular])
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return map[string]any{res.collection: created}, nil
}

type txKey struct{}

// write runs fn in the transaction of the bulk request ctx belongs to, or
// in a write transaction of its own.
func (a *API) write(ctx context.Context, fn func(*store.Tx) error) error {
	if tx, ok := ctx.Value(txKey{}).(*store.Tx); ok {
		return fn(tx)
	}
	_, err := a.db.Write(ctx, fn)
	return err
}

func decodeObject(raw json.RawMessage) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return nil, badRequest("Body contains invalid data")
	}
	return m, nil
}
