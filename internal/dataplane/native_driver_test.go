package dataplane

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/l3ha/l3ha/internal/agentapi"
	"github.com/l3ha/l3ha/internal/linux"
	"github.com/l3ha/l3ha/internal/vrrp/engine"
)

func TestNativeRouterFromHARouter(t *testing.T) {
	r := HARouter{
		RouterID: "0b5c7c4e-9d1a-4a4e-8c43-3f1a4c2b7e01", Namespace: "qrouter-x", VRID: 3, HADevice: "ha-12345678-9a",
		HAAddress: netip.MustParsePrefix("169.254.192.5/18"), VIP: VIPFor(3),
		Excluded: []DevAddr{{Dev: "qg-1", Prefix: netip.MustParsePrefix("172.24.4.8/24")}},
		Routes:   []DevRoute{{Dst: netip.MustParsePrefix("0.0.0.0/0"), Gateway: netip.MustParseAddr("172.24.4.1"), Dev: "qg-1"}},
	}
	got, err := nativeRouter(r, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	want := engine.Router{
		ID: r.RouterID, Namespace: "qrouter-x", VRID: 3, Device: "ha-12345678-9a",
		Address: r.HAAddress, VIP: netip.MustParsePrefix("169.254.0.3/24"),
		Excluded: []engine.Address{{Dev: "qg-1", Prefix: netip.MustParsePrefix("172.24.4.8/24")}},
		Routes:   []engine.Route{{Dst: netip.MustParsePrefix("0.0.0.0/0"), Gateway: netip.MustParseAddr("172.24.4.1"), Dev: "qg-1"}},
	}
	if got.ID != want.ID || got.VRID != want.VRID || got.VIP != want.VIP || got.Address != want.Address ||
		!slices.Equal(got.Excluded, want.Excluded) || !slices.Equal(got.Routes, want.Routes) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	r.VRID = 256
	if _, err := nativeRouter(r, time.Second); err == nil {
		t.Error("VRID 256 accepted")
	}
}

func TestNewNativeDriverOptions(t *testing.T) {
	reg := prometheus.NewRegistry()
	d, err := NewNativeDriver(NativeOptions{Version: 3, AdvertInt: 100 * time.Millisecond, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if o := d.Engine().Options(); o.Priority != 50 || o.Version != 3 || o.Preempt {
		t.Errorf("engine options %+v", o)
	}
	if d.Running() != nil {
		t.Error("routers before Start")
	}
	for _, bad := range []NativeOptions{
		{Version: 2, AdvertInt: 1500 * time.Millisecond},
		{Version: 5},
		{Priority: 255},
	} {
		if _, err := NewNativeDriver(bad); err == nil {
			t.Errorf("NewNativeDriver(%+v) accepted", bad)
		}
	}
	if _, err := NewNativeDriver(NativeOptions{Registerer: reg}); err == nil {
		t.Error("metrics registered twice on one registry")
	}
}

// TestKernelNativeDriver (root): the driver behind the HADriver interface,
// one router alone in its group: reported standby then active with the
// agent's strings, addresses and default route on, listed by Running; state
// saved for adoption; Remove takes everything away.
func TestKernelNativeDriver(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("L3HA_TEST_REQUIRE_ALL") == "1" {
			t.Fatal("kernel tier: needs root (L3HA_TEST_REQUIRE_ALL=1)")
		}
		t.Skip("kernel tier: needs root")
	}
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	ns := "l3ha-test-" + hex.EncodeToString(b)
	if err := linux.CreateNamespace(ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := linux.DeleteNamespace(ns); err != nil {
			t.Error(err)
		}
	})
	ipNS := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", append([]string{"-n", ns}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v %s", strings.Join(args, " "), err, out)
		}
	}
	ha, qg := "ha-"+hex.EncodeToString(b[:4])+"-0", "qg-"+hex.EncodeToString(b[:4])+"-0"
	for _, dev := range []string{ha, qg} {
		peer := "p" + dev[:2] + dev[3:11]
		ipNS("link", "add", dev, "type", "veth", "peer", "name", peer)
		ipNS("link", "set", dev, "up")
		ipNS("link", "set", peer, "up")
	}
	ipNS("addr", "add", "169.254.192.1/18", "dev", ha)

	dir := t.TempDir()
	reg := prometheus.NewRegistry()
	d, err := NewNativeDriver(NativeOptions{StateDir: dir, Version: 3, AdvertInt: 100 * time.Millisecond, GARPDelay: -1, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var reports []string
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() {
		_ = d.Stop(context.Background(), false)
		cancel()
	})
	if err := d.Start(ctx, func(id, st, reason string) {
		mu.Lock()
		reports = append(reports, st+"/"+reason)
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	id := "0b5c7c4e-9d1a-4a4e-8c43-" + hex.EncodeToString(b)[:10] + "00"
	r := HARouter{
		RouterID: id, Namespace: ns, VRID: 5, HADevice: ha, HAAddress: netip.MustParsePrefix("169.254.192.1/18"), VIP: VIPFor(5),
		Excluded: []DevAddr{{Dev: qg, Prefix: netip.MustParsePrefix("172.24.4.8/24")}, {Dev: qg, Prefix: netip.MustParsePrefix("172.24.4.9/32")}},
		Routes:   []DevRoute{{Dst: netip.MustParsePrefix("0.0.0.0/0"), Gateway: netip.MustParseAddr("172.24.4.1"), Dev: qg}},
	}
	if err := d.Ensure(ctx, r); err != nil {
		t.Fatal(err)
	}
	holds := func() bool {
		has, _ := linux.Addresses(ns, ha)
		q, _ := linux.Addresses(ns, qg)
		rs, _ := linux.Routes(ns, linux.RouteProtocolVRRP)
		return slices.Contains(has, VIPFor(5)) && slices.Contains(q, netip.MustParsePrefix("172.24.4.8/24")) &&
			slices.Contains(q, netip.MustParsePrefix("172.24.4.9/32")) && len(rs) == 1
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		got := slices.Clone(reports)
		mu.Unlock()
		// Alone on its HA network, it starts as backup and elects itself
		// without having heard a master: both at startup.
		if slices.Equal(got, []string{agentapi.HAStandby + "/" + agentapi.ReasonStartup, agentapi.HAActive + "/" + agentapi.ReasonStartup}) && holds() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("reports %v, holds %v", got, holds())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The agent cancels Start's context before it calls Stop: the engine
	// keeps running until Stop says whether to resign.
	cancel()
	time.Sleep(50 * time.Millisecond)
	if got := d.Running(); !slices.Equal(got, []string{id}) {
		t.Errorf("Running() = %v after the agent's context ended", got)
	}
	if _, err := os.Stat(dir + "/ha_confs/" + id + "/" + engine.SavedFile); err != nil {
		t.Errorf("router not saved for adoption: %v", err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mf := range mfs {
		names = append(names, mf.GetName())
	}
	for _, want := range []string{"l3ha_vrrp_adverts_sent_total", "l3ha_vrrp_transitions_total"} {
		if !slices.Contains(names, want) {
			t.Errorf("metric %s missing from %v", want, names)
		}
	}
	if err := d.Remove(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	has, _ := linux.Addresses(ns, ha)
	q, _ := linux.Addresses(ns, qg)
	rs, _ := linux.Routes(ns, linux.RouteProtocolVRRP)
	q = slices.DeleteFunc(q, func(p netip.Prefix) bool { return p.Addr().IsLinkLocalUnicast() })
	if slices.Contains(has, VIPFor(5)) || len(q) != 0 || len(rs) != 0 || !slices.Contains(has, netip.MustParsePrefix("169.254.192.1/18")) {
		t.Errorf("after Remove: ha %v qg %v routes %v", has, q, rs)
	}
	if got := d.Running(); len(got) != 0 {
		t.Errorf("Running() after Remove = %v", got)
	}
	if err := d.Stop(context.Background(), true); err != nil {
		t.Error(err)
	}
}
