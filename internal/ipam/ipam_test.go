package ipam

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/l3ha/l3ha/internal/store"
)

func TestDefaultPoolsExcludeGatewayNetworkAndBroadcast(t *testing.T) {
	gw := netip.MustParseAddr("10.0.0.1")
	tests := []struct {
		name    string
		cidr    string
		gateway *netip.Addr
		want    []store.AllocationPool
	}{
		{"gateway first", "10.0.0.0/24", &gw, []store.AllocationPool{{Start: "10.0.0.2", End: "10.0.0.254"}}},
		{"no gateway", "10.0.0.0/24", nil, []store.AllocationPool{{Start: "10.0.0.1", End: "10.0.0.254"}}},
		{"ha subnet", "169.254.192.0/18", nil, []store.AllocationPool{{Start: "169.254.192.1", End: "169.254.255.254"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := DefaultPools(netip.MustParsePrefix(tt.cidr), tt.gateway)
			if len(got) != len(tt.want) {
				t.Fatalf("got %v want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("got %v want %v", got, tt.want)
				}
			}
		})
	}
}

func TestValidatePoolsRejectsBadPools(t *testing.T) {
	prefix := netip.MustParsePrefix("10.0.0.0/24")
	gw := netip.MustParseAddr("10.0.0.1")
	tests := []struct {
		name  string
		pools []store.AllocationPool
		ok    bool
	}{
		{"valid", []store.AllocationPool{{Start: "10.0.0.10", End: "10.0.0.20"}}, true},
		{"outside", []store.AllocationPool{{Start: "10.0.1.10", End: "10.0.1.20"}}, false},
		{"reversed", []store.AllocationPool{{Start: "10.0.0.20", End: "10.0.0.10"}}, false},
		{"contains gateway", []store.AllocationPool{{Start: "10.0.0.1", End: "10.0.0.20"}}, false},
		{"overlap", []store.AllocationPool{{Start: "10.0.0.10", End: "10.0.0.20"}, {Start: "10.0.0.15", End: "10.0.0.30"}}, false},
		{"garbage", []store.AllocationPool{{Start: "x", End: "10.0.0.20"}}, false},
		{"broadcast", []store.AllocationPool{{Start: "10.0.0.10", End: "10.0.0.255"}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidatePools(prefix, &gw, tt.pools)
			if (err == nil) != tt.ok {
				t.Fatalf("ValidatePools(%v) = %v, want ok=%v", tt.pools, err, tt.ok)
			}
		})
	}
}

func TestPickAddressSequentialTakesLowestFree(t *testing.T) {
	pools := []store.AllocationPool{{Start: "10.0.0.2", End: "10.0.0.4"}, {Start: "10.0.0.10", End: "10.0.0.10"}}
	used := map[string]bool{"10.0.0.2": true, "10.0.0.3": true, "10.0.0.4": true}
	a, err := PickAddress(pools, used, true, nil)
	if err != nil || a.String() != "10.0.0.10" {
		t.Fatalf("got %v %v, want 10.0.0.10", a, err)
	}
	used["10.0.0.10"] = true
	if _, err := PickAddress(pools, used, true, nil); err != ErrExhausted {
		t.Fatalf("full pools: got %v, want ErrExhausted", err)
	}
}

func TestPickAddressRandomNeverReturnsUsed(t *testing.T) {
	pools := []store.AllocationPool{{Start: "10.0.0.1", End: "10.0.0.8"}}
	rnd := rand.New(rand.NewPCG(1, 2))
	used := map[string]bool{}
	for range 8 {
		a, err := PickAddress(pools, used, false, rnd)
		if err != nil {
			t.Fatal(err)
		}
		if used[a.String()] {
			t.Fatalf("%s handed out twice", a)
		}
		used[a.String()] = true
	}
	if _, err := PickAddress(pools, used, false, rnd); err != ErrExhausted {
		t.Fatalf("got %v, want ErrExhausted", err)
	}
}

func TestRandomMACUsesOpenStackOUI(t *testing.T) {
	m := RandomMAC(rand.New(rand.NewPCG(3, 4)))
	if len(m) != 17 || m[:9] != "fa:16:3e:" {
		t.Fatalf("mac %q", m)
	}
}
