package api_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/l3ha/l3ha/internal/servertest"
)

// FuzzAPIRequestBodies throws arbitrary bodies at every create and update
// endpoint of a real server: the answer is never a 5xx, and every error is a
// well-formed NeutronError.
func FuzzAPIRequestBodies(f *testing.F) {
	srv := servertest.Start(f, servertest.Options{MinAgents: servertest.Int(0)})
	var routerID string
	{
		resp, err := http.Post(srv.URL+"/v2.0/routers", "application/json", strings.NewReader(`{"router":{"name":"fuzz","ha":true}}`))
		if err != nil {
			f.Fatal(err)
		}
		var out struct{ Router struct{ ID string } }
		_ = json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		routerID = out.Router.ID
	}
	targets := []struct{ method, path string }{
		{"POST", "/v2.0/networks"}, {"POST", "/v2.0/subnets"}, {"POST", "/v2.0/ports"},
		{"POST", "/v2.0/routers"}, {"POST", "/v2.0/floatingips"},
		{"PUT", "/v2.0/routers/" + routerID}, {"PUT", "/v2.0/routers/" + routerID + "/add_router_interface"},
		{"PUT", "/v2.0/routers/" + routerID + "/remove_router_interface"},
	}
	seeds := []string{
		`{"network":{"name":"n","provider:network_type":"flat","provider:physical_network":"p"}}`,
		`{"subnet":{"network_id":"00000000-0000-0000-0000-000000000000","cidr":"10.0.0.0/24","ip_version":4,"allocation_pools":[{"start":"10.0.0.9","end":"10.0.0.2"}]}}`,
		`{"port":{"network_id":"x","fixed_ips":[{"ip_address":"1.2.3.4"}]}}`,
		`{"router":{"name":"r","ha":"TRUE","external_gateway_info":{"network_id":null}}}`,
		`{"router":{"routes":[{"destination":"10.0.0.0/33","nexthop":"a"}]}}`,
		`{"floatingip":{"floating_network_id":[1,2]}}`,
		`{"subnet_id":{}}`, `[]`, `null`, `{"router":null}`, `{"router":{"admin_state_up":false,"ha":false}}`,
		// Bulk creation: items bare or wrapped, bad items, a non-list.
		`{"networks":[{"name":"a"},{"network":{"name":"b"}}]}`, `{"subnets":[{"network":{}},7]}`,
		`{"ports":{"network_id":"x"}}`, `{"routers":[null]}`, `{"floatingips":[]}`,
	}
	for i, s := range seeds {
		f.Add(uint8(i), s)
	}
	f.Fuzz(func(t *testing.T, which uint8, body string) {
		tgt := targets[int(which)%len(targets)]
		req, err := http.NewRequest(tgt.method, srv.URL+tgt.path, strings.NewReader(body))
		if err != nil {
			t.Skip()
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v (server crashed or hung up)", tgt.method, tgt.path, err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		if resp.StatusCode >= 500 {
			t.Fatalf("%s %s with %q: %d %s", tgt.method, tgt.path, body, resp.StatusCode, raw)
		}
		if resp.StatusCode >= 400 {
			var e struct {
				NeutronError *struct{ Type, Message string }
			}
			if json.Unmarshal(raw, &e) != nil || e.NeutronError == nil || e.NeutronError.Type == "" || e.NeutronError.Message == "" {
				t.Fatalf("%s %s: %d with a malformed error body %q", tgt.method, tgt.path, resp.StatusCode, raw)
			}
		}
	})
}
