package linux

import "testing"

func TestDeviceNamesFollowNeutron(t *testing.T) {
	const port = "6f1c2a9e-47d1-4b7f-9a52-3d5e0c8b1f20"
	tests := []struct {
		name, got, want string
	}{
		{"internal port", DeviceName(PrefixInternal, port), "qr-6f1c2a9e-47"},
		{"gateway port", DeviceName(PrefixGateway, port), "qg-6f1c2a9e-47"},
		{"ha port", DeviceName(PrefixHA, port), "ha-6f1c2a9e-47"},
		{"node side of veth", NodeSideName(port), "tap6f1c2a9e-47"},
		{"bridge", BridgeName("0b7d9c3e-1111-2222-3333-444455556666"), "brq0b7d9c3e-11"},
		{"short id kept whole", DeviceName(PrefixInternal, "abc"), "qr-abc"},
		{"long prefix capped at IFNAMSIZ-1", DeviceName("verylongpfx-", port), "verylongpfx-6f1"},
		{"vxlan", VXLANName(16777215), "vxlan-16777215"},
		{"router namespace", RouterNamespace("r1", "-net1"), "qrouter-r1-net1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %q, want %q", tt.got, tt.want)
			}
			if len(tt.got) > MaxDeviceName && tt.name != "router namespace" {
				t.Errorf("%q longer than %d", tt.got, MaxDeviceName)
			}
		})
	}
	if n := len(DeviceName(PrefixInternal, port)); n != 14 {
		t.Errorf("port device name has %d characters, Neutron's have 14", n)
	}
}

func TestSysctlKeysMapToProcSys(t *testing.T) {
	tests := []struct {
		key, want string
		bad       bool
	}{
		{key: "net.ipv4.ip_forward", want: "/proc/sys/net/ipv4/ip_forward"},
		{key: "net.ipv6.conf.qg-6f1c2a9e-47.disable_ipv6", want: "/proc/sys/net/ipv6/conf/qg-6f1c2a9e-47/disable_ipv6"},
		{key: "net/ipv6/conf/eth0.100/disable_ipv6", want: "/proc/sys/net/ipv6/conf/eth0.100/disable_ipv6"},
		{key: "net/../../etc/passwd", bad: true},
		{key: "", bad: true},
	}
	for _, tt := range tests {
		got, err := sysctlPath(tt.key)
		if tt.bad {
			if err == nil {
				t.Errorf("sysctlPath(%q) = %q, want an error", tt.key, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("sysctlPath(%q) = %q, %v; want %q", tt.key, got, err, tt.want)
		}
	}
}
