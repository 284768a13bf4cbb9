package cli

import (
	"context"
	"fmt"
	"net/netip"
	"net/url"

	"github.com/google/uuid"
)

// kind names an API collection.
type kind struct {
	singular string // "network": key of one resource, and its name in messages
	plural   string // "networks": collection path and key of a list
	// byKey is the filter used to find a resource that is not named by id
	// ("name"; floating IPs have no name and are found by address).
	byKey string
}

var (
	kindNetwork    = kind{"network", "networks", "name"}
	kindSubnet     = kind{"subnet", "subnets", "name"}
	kindPort       = kind{"port", "ports", "name"}
	kindRouter     = kind{"router", "routers", "name"}
	kindFloatingIP = kind{"floatingip", "floatingips", "floating_ip_address"}
)

func (k kind) collection() string { return "/v2.0/" + k.plural }

func (k kind) path(id string) string { return k.collection() + "/" + url.PathEscape(id) }

// isUUID reports whether s is a UUID in its canonical 36-character form.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	_, err := uuid.Parse(s)
	return err == nil
}

// resolve turns a name (or, for floating IPs, an address) or an id into an id.
// A UUID is taken as an id as it is; anything else is looked up with a filter
// on the collection and must match exactly one resource.
func (s *session) resolve(ctx context.Context, k kind, arg string) (string, error) {
	if arg == "" {
		return "", fmt.Errorf("empty %s name or id", k.singular)
	}
	if isUUID(arg) {
		return arg, nil
	}
	what := "name"
	if k.byKey == "floating_ip_address" {
		if _, err := netip.ParseAddr(arg); err != nil {
			return "", fmt.Errorf("%q is neither a floating IP id nor an IP address", arg)
		}
		what = "address"
	}
	raw, err := s.c.get(ctx, k.collection(), url.Values{k.byKey: {arg}}, k.plural)
	if err != nil {
		return "", err
	}
	rows, err := decodeList(raw)
	if err != nil {
		return "", err
	}
	var ids []string
	for _, r := range rows {
		// A server that ignores the filter must not make us pick a wrong one.
		if v, ok := r[k.byKey].(string); ok && v != arg {
			continue
		}
		id, _ := r["id"].(string)
		ids = append(ids, id)
	}
	switch len(ids) {
	case 0:
		return "", fmt.Errorf("Unable to find %s with %s '%s'", k.singular, what, arg)
	case 1:
		if ids[0] == "" {
			return "", fmt.Errorf("%s '%s' has no id in the answer", k.singular, arg)
		}
		return ids[0], nil
	default:
		return "", fmt.Errorf("Multiple %s matches found for %s '%s', use an ID to be more specific.", k.singular, what, arg)
	}
}
