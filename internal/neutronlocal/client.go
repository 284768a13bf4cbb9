package neutronlocal

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"time"
)

// APIError is a neutron-server answer other than 2xx.
type APIError struct {
	Method, Path string
	StatusCode   int
	Body         string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("neutronlocal: %s %s: %d %s: %s", e.Method, e.Path, e.StatusCode, http.StatusText(e.StatusCode), e.Body)
}

// IsNotFound reports whether err is a 404 from neutron-server.
func IsNotFound(err error) bool {
	var e *APIError
	return errors.As(err, &e) && e.StatusCode == http.StatusNotFound
}

// Do sends a JSON request to neutron-server's v2.0 API (path relative to
// /v2.0, e.g. "/networks") as admin (noauth: no identity headers) and decodes
// the answer into out (unless nil). in, unless nil, is the JSON body.
func (n *Neutron) Do(ctx context.Context, method, path string, in, out any) error {
	return n.DoHeaders(ctx, method, path, nil, in, out)
}

// DoHeaders is Do with extra request headers (X-Project-Id and the like).
func (n *Neutron) DoHeaders(ctx context.Context, method, path string, h http.Header, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, n.URL()+"/v2.0"+path, body)
	if err != nil {
		return err
	}
	for k, v := range h {
		req.Header[k] = v
	}
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := n.http.Do(req)
	if err != nil {
		return fmt.Errorf("neutronlocal: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("neutronlocal: %s %s: reading the answer: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return &APIError{Method: method, Path: path, StatusCode: resp.StatusCode, Body: string(bytes.TrimSpace(data))}
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("neutronlocal: %s %s: decoding %q: %w", method, path, data, err)
		}
	}
	return nil
}

// Agent is an entry of GET /v2.0/agents (the fields this package uses).
type Agent struct {
	ID                 string `json:"id"`
	AgentType          string `json:"agent_type"`
	Binary             string `json:"binary"`
	Host               string `json:"host"`
	Alive              bool   `json:"alive"`
	AdminStateUp       bool   `json:"admin_state_up"`
	StartedAt          string `json:"started_at"`
	HeartbeatTimestamp string `json:"heartbeat_timestamp"`
	// HAState is set in GET /v2.0/routers/{id}/l3-agents: active,
	// standby or unknown.
	HAState string `json:"ha_state,omitempty"`
}

// Agent types as neutron-server names them.
const (
	AgentTypeL3          = "L3 agent"
	AgentTypeLinuxBridge = "Linux bridge agent"
)

// neutronTime is the layout of the agents' timestamps (UTC).
const neutronTime = "2006-01-02 15:04:05"

// StartedAfter reports whether the agent (re)started at or after t (second
// precision, as neutron-server records it).
func (a Agent) StartedAfter(t time.Time) bool {
	s, err := time.ParseInLocation(neutronTime, a.StartedAt, time.UTC)
	return err == nil && !s.Before(t.UTC().Truncate(time.Second))
}

// Agents lists the agents, optionally of one host ("" for all).
func (n *Neutron) Agents(ctx context.Context, host string) ([]Agent, error) {
	path := "/agents"
	if host != "" {
		path += "?host=" + url.QueryEscape(host)
	}
	var out struct {
		Agents []Agent `json:"agents"`
	}
	if err := n.Do(ctx, http.MethodGet, path, nil, &out); err != nil {
		return nil, err
	}
	return out.Agents, nil
}

// RouterL3Agents is GET /v2.0/routers/{id}/l3-agents: the agents hosting
// the router, with their ha_state.
func (n *Neutron) RouterL3Agents(ctx context.Context, routerID string) ([]Agent, error) {
	var out struct {
		Agents []Agent `json:"agents"`
	}
	if err := n.Do(ctx, http.MethodGet, "/routers/"+url.PathEscape(routerID)+"/l3-agents", nil, &out); err != nil {
		return nil, err
	}
	return out.Agents, nil
}

// waitAgent polls until host has an alive agent of type agentType that
// started at or after since, p (the agent's process, if not nil) exits, or
// ctx ends.
func (n *Neutron) waitAgent(ctx context.Context, host, agentType string, since time.Time, p *proc) error {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		agents, err := n.Agents(ctx, host)
		if err == nil {
			last = fmt.Errorf("no alive %s on host %s started after %s yet", agentType, host, since.UTC().Format(neutronTime))
			for _, a := range agents {
				if a.AgentType == agentType && a.Alive && a.StartedAfter(since) {
					return nil
				}
			}
		} else {
			last = err
		}
		var done <-chan struct{}
		if p != nil {
			done = p.done
		}
		select {
		case <-ctx.Done():
			tails := ""
			if p != nil {
				tails = p.logTails()
			}
			return fmt.Errorf("neutronlocal: waiting for the %s of %s (%v): %w%s", agentType, host, last, ctx.Err(), tails)
		case <-done:
			return fmt.Errorf("neutronlocal: the %s of %s exited (%v)%s", agentType, host, p.waitErr, p.logTails())
		case <-tick.C:
		}
	}
}

// CreateExternalNetwork creates the external network on physnet public (flat,
// router:external, shared: false) with subnet ExternalCIDR (gateway
// UpstreamIP, no DHCP, allocation pool ExternalPoolMin-ExternalPoolMax) and
// returns their ids.
func (n *Neutron) CreateExternalNetwork(ctx context.Context, name string) (networkID, subnetID string, err error) {
	return n.CreateNetwork(ctx, map[string]any{
		"name":                      name,
		"router:external":           true,
		"provider:network_type":     "flat",
		"provider:physical_network": PhysnetPublic,
	}, map[string]any{
		"name":             name + "-subnet",
		"cidr":             ExternalCIDR.String(),
		"gateway_ip":       UpstreamIP.String(),
		"allocation_pools": []map[string]string{{"start": ExternalPoolMin.String(), "end": ExternalPoolMax.String()}},
	})
}

// CreateNetwork creates a network with the attributes network and an IPv4
// subnet on it with the attributes subnet (DHCP off unless subnet says
// otherwise), and returns their ids; the network's id is returned even if
// the subnet fails.
func (n *Neutron) CreateNetwork(ctx context.Context, network, subnet map[string]any) (networkID, subnetID string, err error) {
	var net struct {
		Network struct {
			ID string `json:"id"`
		} `json:"network"`
	}
	if err := n.Do(ctx, http.MethodPost, "/networks", map[string]any{"network": network}, &net); err != nil {
		return "", "", err
	}
	body := map[string]any{"network_id": net.Network.ID, "ip_version": 4, "enable_dhcp": false}
	for k, v := range subnet {
		body[k] = v
	}
	var sub struct {
		Subnet struct {
			ID string `json:"id"`
		} `json:"subnet"`
	}
	if err := n.Do(ctx, http.MethodPost, "/subnets", map[string]any{"subnet": body}, &sub); err != nil {
		return net.Network.ID, "", err
	}
	return net.Network.ID, sub.Subnet.ID, nil
}

// OpenstackRouterAgents runs Debian's openstack client against the server,
// `openstack network agent list --router R --long`, and returns the HA
// state per host it shows, with the client's JSON output.
func (n *Neutron) OpenstackRouterAgents(ctx context.Context, routerID string) (map[string]string, []byte, error) {
	cmd := exec.CommandContext(ctx, "openstack", "--os-auth-type", "none", "--os-endpoint", n.URL(),
		"network", "agent", "list", "--router", routerID, "--long", "-f", "json")
	cmd.Env = childEnv(n.Dir) // Debian's /usr/bin/openstack, without pyenv's Python or OS_* settings
	out, err := cmd.Output()
	if err != nil {
		return nil, out, fmt.Errorf("openstack network agent list --router %s: %w", routerID, err)
	}
	var rows []struct {
		Host    string `json:"Host"`
		HAState string `json:"HA State"`
	}
	if err := json.Unmarshal(out, &rows); err != nil {
		return nil, out, fmt.Errorf("openstack network agent list --router %s: output %q: %w", routerID, out, err)
	}
	states := make(map[string]string, len(rows))
	for _, r := range rows {
		states[r.Host] = r.HAState
	}
	return states, out, nil
}
