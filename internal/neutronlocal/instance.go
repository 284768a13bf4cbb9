package neutronlocal

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"strconv"
	"sync"
	"time"
)

// InstanceOptions configure AddInstance.
type InstanceOptions struct {
	// Name makes the namespace l3ha-nn-vm-<Name> and the port's name
	// "instance <Name>".
	Name string
	// NetworkID is the tenant network: flat (on a physnet of Physnets) or
	// VXLAN.
	NetworkID string
	// IP is the fixed IP to ask for; the zero value lets Neutron allocate
	// one.
	IP netip.Addr
	// ProjectID, if set, is the port's project (tenant_id).
	ProjectID string
}

// Instance is a namespace plugged into a tenant network like a VM's port.
type Instance struct {
	n       *Neutron
	name    string
	ns      string
	portID  string
	mac     net.HardwareAddr
	addr    netip.Prefix
	gateway netip.Addr

	removeOnce sync.Once
	removeErr  error
}

// AddInstance creates a Neutron port on o.NetworkID (device_owner
// compute:nova, unbound) and a namespace l3ha-nn-vm-<name> whose eth0 has
// the port's MAC, address and MTU, with a default route via the subnet's
// gateway: for a flat network a veth into the switch's bridge of the
// network's physnet; for a VXLAN network a VXLAN device (the network's VNI,
// group 224.0.0.1, port 4789) over a veth into the underlay bridge, like the
// linuxbridge agents' own.
func (n *Neutron) AddInstance(ctx context.Context, o InstanceOptions) (*Instance, error) {
	if err := validName("instance", o.Name); err != nil {
		return nil, fmt.Errorf("neutronlocal: %w", err)
	}
	var netw struct {
		Network struct {
			Type     string   `json:"provider:network_type"`
			Physnet  string   `json:"provider:physical_network"`
			Segment  *int     `json:"provider:segmentation_id"`
			MTU      int      `json:"mtu"`
			SubnetID []string `json:"subnets"`
		} `json:"network"`
	}
	if err := n.Do(ctx, http.MethodGet, "/networks/"+o.NetworkID, nil, &netw); err != nil {
		return nil, err
	}
	nw := netw.Network
	switch {
	case nw.Type == "flat" && nw.Physnet != "":
	case nw.Type == "vxlan" && nw.Segment != nil:
	default:
		return nil, fmt.Errorf("neutronlocal: network %s is %s (physnet %q): AddInstance plugs into flat and vxlan networks", o.NetworkID, nw.Type, nw.Physnet)
	}

	n.mu.Lock()
	if n.stopped {
		n.mu.Unlock()
		return nil, errors.New("neutronlocal: AddInstance after Stop")
	}
	if _, dup := n.instances[o.Name]; dup {
		n.mu.Unlock()
		return nil, fmt.Errorf("neutronlocal: instance %s exists", o.Name)
	}
	n.nextInst++
	idx := n.nextInst
	in := &Instance{n: n, name: o.Name, ns: NamespacePrefix + instancePrefix + o.Name}
	n.instances[o.Name] = in
	n.mu.Unlock()
	if idx > 254 {
		in.Remove()
		return nil, errors.New("neutronlocal: too many instances")
	}

	port := map[string]any{
		"network_id":   o.NetworkID,
		"name":         "instance " + o.Name,
		"device_owner": "compute:nova",
		"device_id":    "l3ha-nn-vm-" + o.Name,
	}
	if o.IP.IsValid() {
		port["fixed_ips"] = []map[string]string{{"ip_address": o.IP.String()}}
	}
	if o.ProjectID != "" {
		port["tenant_id"] = o.ProjectID
	}
	var created struct {
		Port struct {
			ID       string `json:"id"`
			MAC      string `json:"mac_address"`
			FixedIPs []struct {
				SubnetID  string `json:"subnet_id"`
				IPAddress string `json:"ip_address"`
			} `json:"fixed_ips"`
		} `json:"port"`
	}
	if err := n.Do(ctx, http.MethodPost, "/ports", map[string]any{"port": port}, &created); err != nil {
		in.Remove()
		return nil, err
	}
	in.portID = created.Port.ID
	err := func() error {
		if len(created.Port.FixedIPs) == 0 {
			return fmt.Errorf("neutronlocal: port %s has no fixed IP (a network without subnet?)", in.portID)
		}
		var sub struct {
			Subnet struct {
				CIDR    string  `json:"cidr"`
				Gateway *string `json:"gateway_ip"`
			} `json:"subnet"`
		}
		if err := n.Do(ctx, http.MethodGet, "/subnets/"+created.Port.FixedIPs[0].SubnetID, nil, &sub); err != nil {
			return err
		}
		cidr, err := netip.ParsePrefix(sub.Subnet.CIDR)
		if err != nil {
			return fmt.Errorf("neutronlocal: subnet CIDR: %w", err)
		}
		ip, err := netip.ParseAddr(created.Port.FixedIPs[0].IPAddress)
		if err != nil {
			return fmt.Errorf("neutronlocal: port IP: %w", err)
		}
		in.addr = netip.PrefixFrom(ip, cidr.Bits())
		if sub.Subnet.Gateway != nil {
			if in.gateway, err = netip.ParseAddr(*sub.Subnet.Gateway); err != nil {
				return fmt.Errorf("neutronlocal: subnet gateway: %w", err)
			}
		}
		if in.mac, err = net.ParseMAC(created.Port.MAC); err != nil {
			return fmt.Errorf("neutronlocal: port MAC: %w", err)
		}
		return in.plumb(ctx, idx, nw.Type, nw.Physnet, nw.Segment, nw.MTU)
	}()
	if err != nil {
		in.Remove()
		return nil, err
	}
	n.log.Info("instance added", "name", o.Name, "namespace", in.ns, "address", in.addr, "network", o.NetworkID, "type", nw.Type)
	return in, nil
}

func (in *Instance) plumb(ctx context.Context, idx int, typ, physnet string, vni *int, mtu int) error {
	if err := createNamespace(in.ns); err != nil {
		return fmt.Errorf("neutronlocal: instance %s: %w", in.name, err)
	}
	tag := "i" + strconv.Itoa(idx) + "-"
	if typ == "flat" {
		if err := vethToSwitch(ctx, in.ns, "eth0", tag+physnet, "br-"+physnet); err != nil {
			return err
		}
	} else {
		if err := vethToSwitch(ctx, in.ns, underlayDev, tag+underlayDev, "br-"+underlayDev); err != nil {
			return err
		}
		if err := ipCmd(ctx, "-n", in.ns, "addr", "add", netip.PrefixFrom(instanceUnderlayIP(idx), underlayBits).String(), "dev", underlayDev); err != nil {
			return err
		}
		if err := ipCmd(ctx, "-n", in.ns, "link", "add", "eth0", "type", "vxlan", "id", strconv.Itoa(*vni),
			"group", vxlanGroup, "dev", underlayDev, "dstport", vxlanPort); err != nil {
			return err
		}
	}
	args := []string{"-n", in.ns, "link", "set", "eth0", "address", in.mac.String()}
	if mtu > 0 {
		args = append(args, "mtu", strconv.Itoa(mtu))
	}
	if err := ipCmd(ctx, append(args, "up")...); err != nil {
		return err
	}
	if err := ipCmd(ctx, "-n", in.ns, "addr", "add", in.addr.String(), "dev", "eth0"); err != nil {
		return err
	}
	if in.gateway.IsValid() {
		return ipCmd(ctx, "-n", in.ns, "route", "add", "default", "via", in.gateway.String(), "dev", "eth0")
	}
	return nil
}

// Name is the instance's name.
func (in *Instance) Name() string { return in.name }

// Namespace is the instance's network namespace, l3ha-nn-vm-<name>.
func (in *Instance) Namespace() string { return in.ns }

// Addr is the instance's address with the subnet's prefix length.
func (in *Instance) Addr() netip.Prefix { return in.addr }

// Gateway is the subnet's gateway (the router's address), the instance's
// default route.
func (in *Instance) Gateway() netip.Addr { return in.gateway }

// PortID is the instance's Neutron port.
func (in *Instance) PortID() string { return in.portID }

// MAC is the port's MAC address, eth0's.
func (in *Instance) MAC() net.HardwareAddr { return in.mac }

// Command is an exec.Cmd that runs name with args in the instance's
// namespace.
func (in *Instance) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return NetnsCommand(ctx, in.ns, name, args...)
}

// Remove deletes the instance's namespace and (best effort: neutron-server
// may be down) its port. Idempotent.
func (in *Instance) Remove() error {
	err := in.remove(true)
	in.n.mu.Lock()
	if in.n.instances[in.name] == in {
		delete(in.n.instances, in.name)
	}
	in.n.mu.Unlock()
	return err
}

func (in *Instance) remove(deletePort bool) error {
	in.removeOnce.Do(func() {
		in.removeErr = deleteNamespace(in.ns)
		if deletePort && in.portID != "" {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := in.n.Do(ctx, http.MethodDelete, "/ports/"+in.portID, nil, nil); err != nil && !IsNotFound(err) {
				in.n.log.Warn("deleting an instance's port", "instance", in.name, "port", in.portID, "err", err)
			}
		}
	})
	return in.removeErr
}
