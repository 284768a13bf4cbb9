package lab

// Acceptance tests of the L3 HA issue, in real namespaces: each test brings
// its own lab up (a unique short name, VRRP adverts every second) and tears
// it down in t.Cleanup, checking that nothing of it is left. They run only
// as root with L3HA_LAB_E2E=1 (`make test` sets it); the 100-router
// measurement also needs L3HA_LAB_SCALE=1.
//
// The router, the tenant network and the instance are made by the lab's own
// failover scenario (scenario.prepare), and faults are injected and measured
// by scenario.measure, so these tests check the same numbers that
// `l3ha lab failover` prints.

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// accAdvert is the VRRP advert interval of the acceptance labs.
const accAdvert = time.Second

// Ports of the UDP echo services (see startUDPEcho).
const (
	echoUpstreamPort = 7007
	echoInstancePort = 7008
)

func needE2E(t *testing.T) {
	t.Helper()
	needLab(t)
	if os.Getenv("L3HA_LAB_E2E") != "1" {
		t.Skip("end-to-end tier: set L3HA_LAB_E2E=1")
	}
}

// tWriter sends the lab's progress messages to the test log.
type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// accLab is a lab brought up by one test.
type accLab struct {
	t    *testing.T
	name string
	dir  string
	st   *State
	api  *apiClient
}

// startAccLab brings a lab up (name prefix + 6 hex digits) and registers its
// teardown, which also fails the test if anything of the lab is left.
func startAccLab(t *testing.T, prefix string) *accLab {
	t.Helper()
	l := &accLab{t: t, name: prefix + randomHex(3), dir: filepath.Join(t.TempDir(), "lab")}
	t.Cleanup(func() { l.down() })
	st, err := Up(t.Context(), Options{
		Name: l.name, Dir: l.dir, Binary: labBinary, Out: tWriter{t},
		HADriver: "keepalived", AdvertInt: strconv.Itoa(int(accAdvert / time.Second)),
	})
	if err != nil {
		t.Fatal(err)
	}
	l.st = st
	l.api = apiFor(st)
	return l
}

// down tears the lab down and checks that no namespace, daemon or
// keepalived of it is left. On failure (or with L3HA_LAB_KEEP_LOGS=1) the
// logs are kept in $TMPDIR/l3ha-acceptance-<name>.
func (l *accLab) down() {
	t := l.t
	if l.api != nil {
		l.api.close()
	}
	if t.Failed() || os.Getenv("L3HA_LAB_KEEP_LOGS") == "1" {
		keep := filepath.Join(os.TempDir(), "l3ha-acceptance-"+l.name)
		_ = os.MkdirAll(keep, 0o755)
		_ = exec.Command("cp", "-a", filepath.Join(l.dir, "logs"), keep).Run()
		if kls, _ := filepath.Glob(filepath.Join(l.dir, "nodes", "*", "ha_confs", "*", "keepalived.log")); len(kls) > 0 {
			for _, k := range kls {
				rel, _ := filepath.Rel(l.dir, k)
				dst := filepath.Join(keep, strings.ReplaceAll(rel, "/", "_"))
				_ = exec.Command("cp", k, dst).Run()
			}
		}
		t.Logf("lab %s: logs kept in %s", l.name, keep)
	}
	var pids []int
	if l.st != nil {
		for _, p := range l.st.Processes {
			pids = append(pids, p.PID)
		}
	}
	if err := Down(DownOptions{Name: l.name, Dir: l.dir}); err != nil {
		t.Errorf("lab down %s: %v", l.name, err)
	}
	// Down waits for what it stops; give reparented keepalived children a
	// moment to be reaped all the same.
	var left []string
	_ = waitFor(context.Background(), 10*time.Second, "the lab to be gone", func() (bool, error) {
		left = labLeftovers(l.name, pids)
		for _, pid := range keepalivedPIDs(l.dir) {
			left = append(left, fmt.Sprintf("keepalived pid %d", pid))
		}
		return len(left) == 0, nil
	})
	if len(left) > 0 {
		t.Errorf("lab %s: left after down: %v", l.name, left)
	}
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.Contains(f[0], "-"+l.name+"-") {
			t.Errorf("lab %s: `ip netns list` still shows %s", l.name, f[0])
		}
	}
}

// scenario returns the lab's failover scenario (not yet prepared).
func (l *accLab) scenario(legacy bool) *scenario {
	o := &FailoverOptions{
		Options: Options{Name: l.name, Dir: l.dir, Binary: labBinary, Out: tWriter{l.t}},
		Fault:   FaultHALink, Timeout: 30 * time.Second, Settle: time.Second,
	}
	if err := o.setDefaults(); err != nil {
		l.t.Fatal(err)
	}
	return &scenario{o: o, st: l.st, api: l.api, legacy: legacy}
}

// keepalivedPIDs returns the keepalived processes whose command line
// mentions match (a lab directory, a router id).
func keepalivedPIDs(match string) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		argv, err := cmdlineOf(pid)
		if err != nil || len(argv) == 0 || filepath.Base(argv[0]) != "keepalived" || !alive(pid) {
			continue
		}
		for _, a := range argv[1:] {
			if strings.Contains(a, match) {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}

// routerKernel is one node's router namespace as the kernel shows it.
type routerKernel struct {
	Exists bool
	// Addrs are the prefixes on the router's qr- and qg- devices, sorted.
	Addrs []string
	// VIP: the ha- device holds the VRRP address 169.254.0.<vrid>/24.
	VIP bool
	// Default: the namespace has a default route.
	Default bool
	// HADevice is the name of the ha- device ("" if none), HAUp its state.
	HADevice string
	HAUp     bool
}

// vipNet holds the VRRP addresses 169.254.0.<vrid>/24 (dataplane.VIPFor).
var vipNet = &net.IPNet{IP: net.IPv4(169, 254, 0, 0).To4(), Mask: net.CIDRMask(24, 32)}

func readRouter(lab, routerID, node string) (routerKernel, error) {
	var rk routerKernel
	ns := RouterNamespace(lab, routerID, node)
	if !nsExists(ns) {
		return rk, nil
	}
	rk.Exists = true
	err := withHandle(ns, func(h *netlink.Handle) error {
		links, err := retryDump(h.LinkList)
		if err != nil {
			return err
		}
		names := map[int]string{}
		for _, k := range links {
			names[k.Attrs().Index] = k.Attrs().Name
			if strings.HasPrefix(k.Attrs().Name, "ha-") {
				rk.HADevice = k.Attrs().Name
				rk.HAUp = k.Attrs().Flags&net.FlagUp != 0
			}
		}
		addrs, err := retryDump(func() ([]netlink.Addr, error) { return h.AddrList(nil, netlink.FAMILY_V4) })
		if err != nil {
			return err
		}
		for _, a := range addrs {
			dev := names[a.LinkIndex]
			switch {
			case strings.HasPrefix(dev, "qr-"), strings.HasPrefix(dev, "qg-"):
				rk.Addrs = append(rk.Addrs, a.IPNet.String())
			case strings.HasPrefix(dev, "ha-") && vipNet.Contains(a.IP):
				rk.VIP = true
			}
		}
		sort.Strings(rk.Addrs)
		routes, err := retryDump(func() ([]netlink.Route, error) { return h.RouteList(nil, netlink.FAMILY_V4) })
		if err != nil {
			return err
		}
		for _, r := range routes {
			if r.Dst == nil || r.Dst.String() == "0.0.0.0/0" {
				rk.Default = true
			}
		}
		return nil
	})
	return rk, err
}

// networkNodes are the nodes that run routers.
func networkNodes() []string {
	var out []string
	for _, n := range Nodes {
		if n.Network {
			out = append(out, n.Name)
		}
	}
	return out
}

func otherNode(node string) string {
	for _, n := range networkNodes() {
		if n != node {
			return n
		}
	}
	return ""
}

// haView is an HA router across the network nodes: kernel and API.
type haView struct {
	Kernel    map[string]routerKernel
	Holders   []string // nodes whose qr-/qg- devices hold any address
	VIPs      []string // nodes holding the VRRP address
	APIActive []string
	APIStates map[string]string // host → ha_state
	APIAlive  map[string]bool
}

func (l *accLab) view(ctx context.Context, routerID string) (haView, error) {
	v := haView{Kernel: map[string]routerKernel{}, APIStates: map[string]string{}, APIAlive: map[string]bool{}}
	for _, n := range networkNodes() {
		rk, err := readRouter(l.name, routerID, n)
		if err != nil {
			return v, err
		}
		v.Kernel[n] = rk
		if len(rk.Addrs) > 0 {
			v.Holders = append(v.Holders, n)
		}
		if rk.VIP {
			v.VIPs = append(v.VIPs, n)
		}
	}
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	agents, err := l.api.routerAgents(actx, routerID)
	if err != nil {
		return v, err
	}
	v.APIActive = activeHosts(agents)
	for _, a := range agents {
		v.APIStates[a.Host] = a.haState()
		v.APIAlive[a.Host] = a.Alive
	}
	return v, nil
}

func (v haView) String() string {
	var b strings.Builder
	for _, n := range networkNodes() {
		k := v.Kernel[n]
		fmt.Fprintf(&b, "[%s: ns %v vip %v default %v %s up %v addrs %v; API %s alive %v] ", n, k.Exists, k.VIP, k.Default,
			k.HADevice, k.HAUp, k.Addrs, v.APIStates[n], v.APIAlive[n])
	}
	return b.String()
}

// settled: exactly one node holds the VIP and addresses (exactly want, if
// given), the other holds neither nor a default route, and the API shows
// that node, alone, active (and the other standby).
func (v haView) settled(want []string) (string, bool) {
	if len(v.VIPs) != 1 || len(v.APIActive) != 1 || v.APIActive[0] != v.VIPs[0] {
		return "", false
	}
	m := v.VIPs[0]
	if want != nil && !slices.Equal(v.Kernel[m].Addrs, want) {
		return m, false
	}
	if want == nil && len(v.Holders) != 1 {
		return m, false
	}
	for _, n := range networkNodes() {
		if n == m {
			continue
		}
		k := v.Kernel[n]
		if len(k.Addrs) > 0 || k.VIP || k.Default || v.APIStates[n] != "standby" {
			return m, false
		}
	}
	return m, true
}

// gatewayRouter creates an HA router named name with its gateway on the
// lab's public network and waits until it has settled on one master, which
// it returns with the router.
func (l *accLab) gatewayRouter(t *testing.T, name string) (apiRouter, string) {
	t.Helper()
	pub, err := ensurePublicNetwork(t.Context(), l.api)
	if err != nil {
		t.Fatal(err)
	}
	var r apiRouter
	if err := l.api.create(t.Context(), "routers", "router", map[string]any{
		"name": name, "ha": true, "external_gateway_info": map[string]any{"network_id": pub},
	}, &r); err != nil {
		t.Fatal(err)
	}
	return r, l.waitSettled(t, r.ID, nil, 120*time.Second)
}

// waitSettled waits until the router has one master holding exactly want
// (any addresses if nil) and returns it.
func (l *accLab) waitSettled(t *testing.T, routerID string, want []string, timeout time.Duration) string {
	t.Helper()
	var v haView
	var master string
	err := waitFor(t.Context(), timeout, "one master holding "+strings.Join(want, " "), func() (bool, error) {
		var err error
		v, err = l.view(t.Context(), routerID)
		if err != nil {
			return false, nil
		}
		m, ok := v.settled(want)
		master = m
		return ok, nil
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, v)
	}
	return master
}

// logLines returns the lines of a lab log that contain every needle.
func logLines(path string, needles ...string) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		ok := true
		for _, n := range needles {
			ok = ok && strings.Contains(line, n)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

func (l *accLab) agentLog(node string) string { return logPath(l.dir, "agent-"+node) }

// haReports counts, per network node, the "HA state" lines its agent
// logged for the router (one per state change it saw or adopted).
func (l *accLab) haReports(routerID string) map[string][]string {
	out := map[string][]string{}
	for _, n := range networkNodes() {
		out[n] = logLines(l.agentLog(n), `msg="HA state"`, "router_id="+routerID)
	}
	return out
}

// reloads counts the SIGHUPs the node's agent sent the router's keepalived.
func (l *accLab) reloads(node, routerID string) int {
	return len(logLines(l.agentLog(node), `msg="keepalived reloaded"`, "router_id="+routerID))
}

// masterWatch polls a router's kernel state every few milliseconds until
// finished, and reports every time a node other than master held the VIP,
// an address or a default route, and every time master lacked the VIP.
type masterWatch struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	bad  []string
}

func (l *accLab) watchMaster(routerID, master string) *masterWatch {
	w := &masterWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			for _, n := range networkNodes() {
				rk, err := readRouter(l.name, routerID, n)
				if err != nil {
					continue
				}
				var msg string
				switch {
				case n == master && !rk.VIP:
					msg = fmt.Sprintf("%s: master %s lost the VIP", time.Now().Format("15:04:05.000"), n)
				case n != master && (rk.VIP || len(rk.Addrs) > 0 || rk.Default):
					msg = fmt.Sprintf("%s: backup %s holds vip=%v addrs=%v default=%v", time.Now().Format("15:04:05.000"), n, rk.VIP, rk.Addrs, rk.Default)
				}
				if msg != "" {
					w.mu.Lock()
					if len(w.bad) < 20 {
						w.bad = append(w.bad, msg)
					}
					w.mu.Unlock()
				}
			}
			select {
			case <-w.stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	return w
}

func (w *masterWatch) finish() []string {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.bad
}

// UDP echo: a service in a namespace that answers every datagram with the
// source address it came from, so the other side learns what source address
// NAT gave it without looking at conntrack.

func startUDPEcho(t *testing.T, ns string, port int) {
	t.Helper()
	var pc net.PacketConn
	if err := inNamespace(ns, func() error {
		var err error
		pc, err = net.ListenPacket("udp4", ":"+strconv.Itoa(port))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo([]byte(from.String()), from)
		}
	}()
}

// udpAsk sends a datagram from namespace ns to dst and returns the source
// address the echo saw (its IP only).
func udpAsk(ns, dst string) (string, error) {
	var c net.Conn
	if err := inNamespace(ns, func() error {
		var err error
		c, err = net.Dial("udp4", dst)
		return err
	}); err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("who am i")); err != nil {
		return "", err
	}
	buf := make([]byte, 100)
	n, err := c.Read(buf)
	if err != nil {
		return "", err
	}
	host, _, err := net.SplitHostPort(string(buf[:n]))
	return host, err
}

// waitSourceSeen waits until a datagram from ns reaches dst and the echo
// saw source address want.
func waitSourceSeen(t *testing.T, ns, dst, want string) {
	t.Helper()
	var got string
	var lastErr error
	err := waitFor(t.Context(), 30*time.Second, "echo at "+dst+" to see source "+want, func() (bool, error) {
		got, lastErr = udpAsk(ns, dst)
		return lastErr == nil && got == want, nil
	})
	if err != nil {
		t.Errorf("%v (last answer %q, error %v)", err, got, lastErr)
	}
}

func waitPing(t *testing.T, ns, target string) {
	t.Helper()
	if err := waitFor(t.Context(), 30*time.Second, "ping from "+ns+" to "+target, func() (bool, error) {
		_, err := runIn(t.Context(), ns, "ping", "-n", "-c", "1", "-W", "1", target)
		return err == nil, nil
	}); err != nil {
		t.Error(err)
	}
}

// API helpers.

func (l *accLab) put(t *testing.T, path string, body any) {
	t.Helper()
	if err := l.api.do(t.Context(), http.MethodPut, path, body, nil); err != nil {
		t.Fatal(err)
	}
}

func (l *accLab) del(t *testing.T, path string) {
	t.Helper()
	if err := l.api.do(t.Context(), http.MethodDelete, path, nil, nil); err != nil {
		t.Fatal(err)
	}
}

func (l *accLab) list(t *testing.T, collection string, q url.Values) []map[string]any {
	t.Helper()
	var env map[string][]map[string]any
	if err := l.api.do(t.Context(), http.MethodGet, "/v2.0/"+collection+"?"+q.Encode(), nil, &env); err != nil {
		t.Fatal(err)
	}
	return env[collection]
}

// parallel runs fn(i) for i in [0,n) on workers goroutines and returns the
// first error.
func parallel(n, workers int, fn func(i int) error) error {
	var (
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
	)
	next := make(chan int)
	for range workers {
		wg.Go(func() {
			for i := range next {
				if err := fn(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return first
}

func hostPrefix(ip string, bits int) string { return ip + "/" + strconv.Itoa(bits) }

func sortedCopy(s ...string) []string {
	out := append([]string{}, s...)
	sort.Strings(out)
	return out
}

// TestAcceptanceHARouter is the HA router's life on two network nodes, in
// one lab: placement and NAT, an agent restart on the master, live changes
// (interfaces, gateway, floating IPs, 50 floating IPs at once), the three
// failovers with the old master coming back (nopreempt), and deletion.
func TestAcceptanceHARouter(t *testing.T) {
	needE2E(t)
	l := startAccLab(t, "ha")
	s := l.scenario(false)
	if err := s.prepare(t.Context()); err != nil {
		t.Fatal(err)
	}
	vm := NodeNamespace(l.name, instanceNS)
	up := NodeNamespace(l.name, upstreamNS)
	startUDPEcho(t, up, echoUpstreamPort)
	startUDPEcho(t, vm, echoInstancePort)
	upEcho := net.JoinHostPort(UpstreamIP, strconv.Itoa(echoUpstreamPort))
	base := func() []string {
		return sortedCopy(hostPrefix(s.gatewayIP, ExternalPrefix), hostPrefix(TenantGateway, 24), hostPrefix(s.floatingIP, 32))
	}
	t.Logf("lab %s: HA router %s, gateway %s, instance %s, floating IP %s", l.name, s.routerID, s.gatewayIP, s.portIP, s.floatingIP)

	t.Run("Placement", func(t *testing.T) {
		master := l.waitSettled(t, s.routerID, base(), 60*time.Second)
		v, err := l.view(t.Context(), s.routerID)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("master %s: %s", master, v)
		if len(v.APIStates) != 2 {
			t.Errorf("router hosted by %v, want both network nodes", v.APIStates)
		}
		if !v.Kernel[master].Default {
			t.Errorf("master %s has no default route", master)
		}
		for _, n := range networkNodes() {
			if !v.Kernel[n].Exists || v.Kernel[n].HADevice == "" {
				t.Errorf("%s: router namespace %v, ha- device %q", n, v.Kernel[n].Exists, v.Kernel[n].HADevice)
			}
		}
		// Out, with the floating IP: upstream sees the floating IP.
		waitSourceSeen(t, vm, upEcho, s.floatingIP)
		// In: upstream reaches the instance through its floating IP, and the
		// instance sees upstream's own address (DNAT only).
		waitPing(t, up, s.floatingIP)
		waitSourceSeen(t, up, net.JoinHostPort(s.floatingIP, strconv.Itoa(echoInstancePort)), UpstreamIP)

		// Without the floating IP the instance goes out through SNAT: the
		// upstream host sees the router's gateway address.
		l.put(t, "/v2.0/floatingips/"+s.fipID, map[string]any{"floatingip": map[string]any{"port_id": nil}})
		l.waitSettled(t, s.routerID, sortedCopy(hostPrefix(s.gatewayIP, ExternalPrefix), hostPrefix(TenantGateway, 24)), 30*time.Second)
		waitSourceSeen(t, vm, upEcho, s.gatewayIP)
		l.put(t, "/v2.0/floatingips/"+s.fipID, map[string]any{"floatingip": map[string]any{"port_id": s.portID}})
		if m := l.waitSettled(t, s.routerID, base(), 30*time.Second); m != master {
			t.Errorf("master moved from %s to %s while the floating IP was moved", master, m)
		}
		waitSourceSeen(t, vm, upEcho, s.floatingIP)
		waitPing(t, up, s.floatingIP)
	})

	t.Run("AgentRestartOnMaster", func(t *testing.T) {
		master, _ := l.restartMasterAgentUnnoticed(t, s, base(), 8*time.Second)
		if m := l.waitSettled(t, s.routerID, base(), 10*time.Second); m != master {
			t.Errorf("master %s after the restart, want %s", m, master)
		}
		l.checkStateFiles(t, s.routerID, master)
	})

	// A change made while the master's agent is away reaches the adopted
	// keepalived of the restarted agent, still without a transition.
	t.Run("AgentRestartWithChangeWhileDown", func(t *testing.T) {
		master := l.waitSettled(t, s.routerID, base(), 60*time.Second)
		reportsBefore := l.haReports(s.routerID)
		adoptedBefore := len(logLines(l.agentLog(master), `msg="keepalived adopted"`, "router_id="+s.routerID))
		w := l.watchMaster(s.routerID, master)
		p, _ := l.st.process("agent-" + master)
		if err := p.signal(syscall.SIGUSR2); err != nil {
			t.Fatal(err)
		}
		if err := waitFor(t.Context(), 30*time.Second, "the agent to exit", func() (bool, error) { return !p.running(), nil }); err != nil {
			t.Fatal(err)
		}
		l.put(t, "/v2.0/floatingips/"+s.fipID, map[string]any{"floatingip": map[string]any{"port_id": nil}})
		np, err := restartAgent(t.Context(), l.st, master)
		if err != nil {
			t.Fatal(err)
		}
		if m := l.waitSettled(t, s.routerID, sortedCopy(hostPrefix(s.gatewayIP, ExternalPrefix), hostPrefix(TenantGateway, 24)), 60*time.Second); m != master {
			t.Errorf("master moved from %s to %s", master, m)
		}
		l.put(t, "/v2.0/floatingips/"+s.fipID, map[string]any{"floatingip": map[string]any{"port_id": s.portID}})
		if m := l.waitSettled(t, s.routerID, base(), 60*time.Second); m != master {
			t.Errorf("master moved from %s to %s", master, m)
		}
		if bad := w.finish(); len(bad) > 0 {
			t.Errorf("the VIP moved: %v", bad)
		}
		after := l.haReports(s.routerID)
		for _, n := range networkNodes() {
			for _, line := range after[n][len(reportsBefore[n]):] {
				if n != master || !strings.Contains(line, "state=active") {
					t.Errorf("%s reported a change: %s", n, line)
				}
			}
		}
		if adopted := len(logLines(l.agentLog(master), `msg="keepalived adopted"`, "router_id="+s.routerID)) - adoptedBefore; adopted != 1 {
			t.Errorf("the restarted agent of %s (pid %d) adopted the router's keepalived %d times, want once", master, np.PID, adopted)
		}
		waitSourceSeen(t, vm, upEcho, s.floatingIP)
	})

	t.Run("LiveChanges", func(t *testing.T) {
		master := l.waitSettled(t, s.routerID, base(), 60*time.Second)
		reportsBefore := l.haReports(s.routerID)
		w := l.watchMaster(s.routerID, master)
		expect := func(what string, want []string) {
			t.Helper()
			if m := l.waitSettled(t, s.routerID, want, 60*time.Second); m != master {
				t.Errorf("%s: master moved from %s to %s", what, master, m)
			}
		}
		// A second interface.
		var n2, sub2 idOnly
		if err := l.api.create(t.Context(), "networks", "network", map[string]any{"name": "live-net-" + s.runID}, &n2); err != nil {
			t.Fatal(err)
		}
		if err := l.api.create(t.Context(), "subnets", "subnet", map[string]any{
			"name": "live-subnet-" + s.runID, "network_id": n2.ID, "ip_version": 4, "cidr": "10.10.40.0/24",
			"gateway_ip": "10.10.40.1", "enable_dhcp": false,
		}, &sub2); err != nil {
			t.Fatal(err)
		}
		l.put(t, "/v2.0/routers/"+s.routerID+"/add_router_interface", map[string]any{"subnet_id": sub2.ID})
		expect("interface added", sortedCopy(append(base(), "10.10.40.1/24")...))
		l.put(t, "/v2.0/routers/"+s.routerID+"/remove_router_interface", map[string]any{"subnet_id": sub2.ID})
		expect("interface removed", base())
		l.del(t, "/v2.0/networks/"+n2.ID)

		// The gateway: the floating IP must go first (it needs the gateway).
		l.put(t, "/v2.0/floatingips/"+s.fipID, map[string]any{"floatingip": map[string]any{"port_id": nil}})
		expect("floating IP disassociated", sortedCopy(hostPrefix(s.gatewayIP, ExternalPrefix), hostPrefix(TenantGateway, 24)))
		l.put(t, "/v2.0/routers/"+s.routerID, map[string]any{"router": map[string]any{"external_gateway_info": map[string]any{}}})
		expect("gateway cleared", []string{hostPrefix(TenantGateway, 24)})
		if v, _ := l.view(t.Context(), s.routerID); v.Kernel[master].Default {
			t.Errorf("master keeps a default route without a gateway: %s", v)
		}
		var r struct {
			Router apiRouter `json:"router"`
		}
		if err := l.api.do(t.Context(), http.MethodPut, "/v2.0/routers/"+s.routerID,
			map[string]any{"router": map[string]any{"external_gateway_info": map[string]any{"network_id": s.pubID}}}, &r); err != nil {
			t.Fatal(err)
		}
		s.gatewayIP = r.Router.gatewayIP()
		if s.gatewayIP == "" {
			t.Fatalf("router has no gateway address after setting it again: %+v", r.Router)
		}
		expect("gateway set", sortedCopy(hostPrefix(s.gatewayIP, ExternalPrefix), hostPrefix(TenantGateway, 24)))
		if v, _ := l.view(t.Context(), s.routerID); !v.Kernel[master].Default {
			t.Errorf("master has no default route after the gateway came back: %s", v)
		}
		l.put(t, "/v2.0/floatingips/"+s.fipID, map[string]any{"floatingip": map[string]any{"port_id": s.portID}})
		expect("floating IP associated", base())
		waitSourceSeen(t, vm, upEcho, s.floatingIP)
		waitPing(t, up, s.floatingIP)

		if bad := w.finish(); len(bad) > 0 {
			t.Errorf("the VIP moved during live changes: %v", bad)
		}
		after := l.haReports(s.routerID)
		for _, n := range networkNodes() {
			if extra := after[n][len(reportsBefore[n]):]; len(extra) > 0 {
				t.Errorf("%s reported HA changes during live changes: %v", n, extra)
			}
		}
	})

	t.Run("FiftyFloatingIPs", func(t *testing.T) {
		const n = 50
		master := l.waitSettled(t, s.routerID, base(), 60*time.Second)
		reportsBefore := l.haReports(s.routerID)
		reloadsBefore := l.reloads(master, s.routerID)
		w := l.watchMaster(s.routerID, master)
		ports := make([]string, n)
		fips := make([]string, n)
		addrs := make([]string, n)
		start := time.Now()
		if err := parallel(n, 8, func(i int) error {
			var p idOnly
			if err := l.api.create(t.Context(), "ports", "port", map[string]any{
				"name": fmt.Sprintf("many-%s-%d", s.runID, i), "network_id": s.netID,
			}, &p); err != nil {
				return err
			}
			ports[i] = p.ID
			var f struct {
				ID                string `json:"id"`
				FloatingIPAddress string `json:"floating_ip_address"`
			}
			if err := l.api.create(t.Context(), "floatingips", "floatingip", map[string]any{"floating_network_id": s.pubID, "port_id": p.ID}, &f); err != nil {
				return err
			}
			fips[i], addrs[i] = f.ID, hostPrefix(f.FloatingIPAddress, 32)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		created := time.Since(start)
		want := sortedCopy(append(base(), addrs...)...)
		if m := l.waitSettled(t, s.routerID, want, 120*time.Second); m != master {
			t.Errorf("master moved from %s to %s", master, m)
		}
		converged := time.Since(start)
		l.waitNoReloadPending(t, master, s.routerID)
		added := l.reloads(master, s.routerID) - reloadsBefore
		t.Logf("%d ports + %d floating IPs created in %.1f s; master %s held all of them after %.1f s; keepalived reloaded %d times",
			n, n, created.Seconds(), master, converged.Seconds(), added)

		// And all at once away again.
		reloadsMid := l.reloads(master, s.routerID)
		start = time.Now()
		if err := parallel(n, 8, func(i int) error {
			if err := l.api.do(t.Context(), http.MethodDelete, "/v2.0/floatingips/"+fips[i], nil, nil); err != nil {
				return err
			}
			return l.api.do(t.Context(), http.MethodDelete, "/v2.0/ports/"+ports[i], nil, nil)
		}); err != nil {
			t.Fatal(err)
		}
		if m := l.waitSettled(t, s.routerID, base(), 120*time.Second); m != master {
			t.Errorf("master moved from %s to %s", master, m)
		}
		l.waitNoReloadPending(t, master, s.routerID)
		removed := l.reloads(master, s.routerID) - reloadsMid
		t.Logf("%d floating IPs and ports deleted; master back to its own addresses after %.1f s; keepalived reloaded %d times",
			n, time.Since(start).Seconds(), removed)

		if bad := w.finish(); len(bad) > 0 {
			t.Errorf("the VIP moved: %v", bad)
		}
		after := l.haReports(s.routerID)
		for _, node := range networkNodes() {
			if extra := after[node][len(reportsBefore[node]):]; len(extra) > 0 {
				t.Errorf("%s reported HA transitions: %v", node, extra)
			}
		}
		// Coalesced: 2n router changes each way, at most a reload per
		// ReloadDelay window while they arrive.
		const maxReloads = 25
		if added < 1 || added > maxReloads || removed < 1 || removed > maxReloads {
			t.Errorf("keepalived on %s reloaded %d times for %d additions and %d times for %d removals; want 1..%d each", master, added, n, removed, n, maxReloads)
		}
	})

	// The three failovers. A node fault on the controller (net1) would cut
	// the server off too (the API could not learn the new master), so the
	// node fault is injected when net2 is the master: masters alternate, so
	// some order always allows it.
	remaining := slices.Clone(Faults)
	for len(remaining) > 0 {
		v, err := l.view(t.Context(), s.routerID)
		if err != nil {
			t.Fatal(err)
		}
		fault := remaining[0]
		if len(v.VIPs) == 1 {
			for _, f := range remaining {
				if (f == FaultNode) == (v.VIPs[0] != controllerNode().Name) {
					fault = f
					break
				}
			}
		}
		remaining = slices.DeleteFunc(remaining, func(f string) bool { return f == fault })
		if !t.Run("Failover/"+fault, func(t *testing.T) { l.failover(t, s, fault, base) }) {
			break // the router is in an unknown state: the next ones would not tell much
		}
	}

	t.Run("Delete", func(t *testing.T) {
		haPorts := l.list(t, "ports", url.Values{"device_id": {s.routerID}, "device_owner": {"network:router_ha_interface"}})
		if len(haPorts) != 2 {
			t.Errorf("router has %d HA ports before deletion, want 2", len(haPorts))
		}
		for _, n := range networkNodes() {
			conf := filepath.Join(nodeStateDir(l.dir, n), "ha_confs", s.routerID)
			if len(keepalivedPIDs(conf+"/")) == 0 {
				t.Errorf("%s: no keepalived for router %s before deletion", n, s.routerID)
			}
			if _, err := os.Stat(conf); err != nil {
				t.Errorf("%s: %v", n, err)
			}
		}
		l.del(t, "/v2.0/floatingips/"+s.fipID)
		l.put(t, "/v2.0/routers/"+s.routerID+"/remove_router_interface", map[string]any{"subnet_id": s.subnetID})
		l.del(t, "/v2.0/routers/"+s.routerID)
		var left []string
		err := waitFor(t.Context(), 60*time.Second, "router "+s.routerID+" to be gone from every node", func() (bool, error) {
			left = nil
			for _, n := range Nodes {
				if ns := RouterNamespace(l.name, s.routerID, n.Name); nsExists(ns) {
					left = append(left, "namespace "+ns)
				}
				if _, err := os.Stat(filepath.Join(nodeStateDir(l.dir, n.Name), "ha_confs", s.routerID)); err == nil {
					left = append(left, n.Name+": ha_confs/"+s.routerID)
				}
			}
			for _, pid := range keepalivedPIDs(s.routerID) {
				left = append(left, fmt.Sprintf("keepalived pid %d", pid))
			}
			return len(left) == 0, nil
		})
		if err != nil {
			t.Errorf("%v: %v", err, left)
		}
		if p := l.list(t, "ports", url.Values{"device_id": {s.routerID}}); len(p) > 0 {
			t.Errorf("ports of the deleted router left: %v", p)
		}
		// It was the project's only HA router: its HA network goes too.
		for _, n := range l.list(t, "networks", nil) {
			if name, _ := n["name"].(string); strings.HasPrefix(name, "HA network tenant") {
				t.Errorf("HA network left after the project's last HA router: %v", n)
			}
		}
	})
}

// failover injects fault into the router's master, checks the takeover
// (kernel and API), brings the old master back and checks that it does not
// take the router back.
func (l *accLab) failover(t *testing.T, s *scenario, fault string, base func() []string) {
	old := l.waitSettled(t, s.routerID, base(), 60*time.Second)
	s.o.Fault, s.o.Timeout, s.o.Settle = fault, 30*time.Second, time.Second
	res, err := s.measure(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	apiDelay := -1.0
	if res.FailoverSeconds != nil && res.APIFailoverSeconds != nil {
		apiDelay = *res.APIFailoverSeconds - *res.FailoverSeconds
	}
	t.Logf("%s on %s: %s took over after %v s, API after %v s (%.3f s after the kernel), pings sent %d lost %d, longest gap %.3f s (%s)",
		fault, old, res.MasterAfter, deref(res.FailoverSeconds), deref(res.APIFailoverSeconds), apiDelay,
		res.PingsSent, res.PingsLost, res.LongestGapSeconds, res.FaultDetail)
	newMaster := otherNode(old)
	if res.MasterBefore != old || res.FailoverSeconds == nil || res.MasterAfter != newMaster {
		t.Fatalf("no failover: master %s → %s (failover %v s)", res.MasterBefore, res.MasterAfter, deref(res.FailoverSeconds))
	}
	if !res.PingsResumed || res.PingsLost >= res.PingsSent {
		t.Errorf("the instance's pings did not resume: %d sent, %d lost", res.PingsSent, res.PingsLost)
	}
	if fault == FaultNode && old == controllerNode().Name {
		t.Logf("the node fault hit the controller: the API cannot learn the new master")
	} else {
		if res.APIFailoverSeconds == nil || res.APIMasterAfter != newMaster {
			t.Errorf("API: active %q after the failover (after %v s)", res.APIMasterAfter, deref(res.APIFailoverSeconds))
		} else if apiDelay > 2 {
			t.Errorf("API showed the new master %.3f s after the kernel transition, want within 2 s", apiDelay)
		}
	}
	waitPing(t, NodeNamespace(l.name, instanceNS), UpstreamIP)

	// The old master comes back.
	switch fault {
	case FaultHALink:
		if err := withHandle(RouterNamespace(l.name, s.routerID, old), func(h *netlink.Handle) error {
			links, err := retryDump(h.LinkList)
			if err != nil {
				return err
			}
			for _, k := range links {
				if strings.HasPrefix(k.Attrs().Name, "ha-") {
					return h.LinkSetUp(k)
				}
			}
			return fmt.Errorf("no ha- device")
		}); err != nil {
			t.Fatal(err)
		}
	case FaultNode:
		l.rebootNode(t, old)
	case FaultAgentStop:
		if _, err := restartAgent(t.Context(), l.st, old); err != nil {
			t.Fatal(err)
		}
	}
	// Back: its agent is alive, has the router (keepalived running) and
	// reports it standby...
	var v haView
	if err := waitFor(t.Context(), 90*time.Second, old+" to be back as a backup", func() (bool, error) {
		v, err = l.view(t.Context(), s.routerID)
		rk := v.Kernel[old]
		return err == nil && rk.Exists && rk.HAUp && v.APIAlive[old] && v.APIStates[old] == "standby" &&
			len(keepalivedPIDs(filepath.Join(nodeStateDir(l.dir, old), "ha_confs", s.routerID)+"/")) > 0, nil
	}); err != nil {
		t.Fatalf("%v\n%s", err, v)
	}
	// ...and stays one for several advert intervals (nopreempt), past the
	// master-down interval of a keepalived that starts as a backup.
	w := l.watchMaster(s.routerID, newMaster)
	watchEnd := time.Now().Add(5 * accAdvert)
	for time.Now().Before(watchEnd) {
		if v, err := l.view(t.Context(), s.routerID); err == nil && !slices.Equal(v.APIActive, []string{newMaster}) {
			t.Errorf("API shows %v active after %s came back, want %s", v.APIActive, old, newMaster)
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if bad := w.finish(); len(bad) > 0 {
		t.Errorf("%s took the router back: %v", old, bad)
	}
	if m := l.waitSettled(t, s.routerID, base(), 10*time.Second); m != newMaster {
		t.Errorf("master is %s after %s came back, want %s", m, old, newMaster)
	}
	l.checkStateFiles(t, s.routerID, newMaster)
}

// checkStateFiles checks <state_dir>/ha_confs/<router_id>/state on the
// network nodes: "master" on master, "backup" on the other.
func (l *accLab) checkStateFiles(t *testing.T, routerID, master string) {
	t.Helper()
	for _, node := range networkNodes() {
		want := "backup"
		if node == master {
			want = "master"
		}
		b, err := os.ReadFile(filepath.Join(nodeStateDir(l.dir, node), "ha_confs", routerID, "state"))
		if err != nil || strings.TrimSpace(string(b)) != want {
			t.Errorf("%s: state file %q (%v), want %s", node, strings.TrimSpace(string(b)), err, want)
		}
	}
}

// rebootNode is rebootNode for a test: it fails t.
func (l *accLab) rebootNode(t *testing.T, node string) {
	t.Helper()
	if err := rebootNode(t.Context(), l.st, node); err != nil {
		t.Fatal(err)
	}
}

// waitNoReloadPending waits until the node's keepalived for the router has
// read its latest config (no SIGHUP pending).
func (l *accLab) waitNoReloadPending(t *testing.T, node, routerID string) {
	t.Helper()
	marker := filepath.Join(nodeStateDir(l.dir, node), "ha_confs", routerID, "reload-pending")
	if err := waitFor(t.Context(), 30*time.Second, "keepalived on "+node+" to be reloaded", func() (bool, error) {
		_, err := os.Stat(marker)
		return os.IsNotExist(err), nil
	}); err != nil {
		t.Error(err)
	}
}

// TestAcceptanceLegacyRouter: a legacy router (ha false, set by the admin)
// runs on one agent and works end to end: the instance reaches the upstream
// host through SNAT, the upstream host reaches the instance through a
// floating IP.
func TestAcceptanceLegacyRouter(t *testing.T) {
	needE2E(t)
	l := startAccLab(t, "lg")
	s := l.scenario(true)
	if err := s.prepare(t.Context()); err != nil {
		t.Fatal(err)
	}
	var r struct {
		Router apiRouter `json:"router"`
	}
	if err := l.api.do(t.Context(), http.MethodGet, "/v2.0/routers/"+s.routerID, nil, &r); err != nil {
		t.Fatal(err)
	}
	if r.Router.HA {
		t.Fatalf("router %s is HA, want legacy", s.routerID)
	}
	agents, err := l.api.routerAgents(t.Context(), s.routerID)
	if err != nil {
		t.Fatal(err)
	}
	if len(agents) != 1 {
		t.Fatalf("legacy router hosted by %d agents, want 1: %+v", len(agents), agents)
	}
	host := agents[0].Host
	want := sortedCopy(hostPrefix(s.gatewayIP, ExternalPrefix), hostPrefix(TenantGateway, 24), hostPrefix(s.floatingIP, 32))
	var rk routerKernel
	if err := waitFor(t.Context(), 60*time.Second, "the router's addresses on "+host, func() (bool, error) {
		rk, err = readRouter(l.name, s.routerID, host)
		return err == nil && slices.Equal(rk.Addrs, want) && rk.Default, nil
	}); err != nil {
		t.Fatalf("%v: %+v", err, rk)
	}
	if rk.HADevice != "" || rk.VIP {
		t.Errorf("legacy router has HA parts: %+v", rk)
	}
	if pids := keepalivedPIDs(s.routerID); len(pids) > 0 {
		t.Errorf("keepalived runs for a legacy router: %v", pids)
	}
	if other := otherNode(host); other != "" {
		if ns := RouterNamespace(l.name, s.routerID, other); nsExists(ns) {
			t.Errorf("legacy router also on %s", other)
		}
	}
	vm := NodeNamespace(l.name, instanceNS)
	up := NodeNamespace(l.name, upstreamNS)
	startUDPEcho(t, up, echoUpstreamPort)
	startUDPEcho(t, vm, echoInstancePort)
	upEcho := net.JoinHostPort(UpstreamIP, strconv.Itoa(echoUpstreamPort))
	t.Logf("legacy router %s on %s: gateway %s, floating IP %s", s.routerID, host, s.gatewayIP, s.floatingIP)

	waitPing(t, up, s.floatingIP)
	waitSourceSeen(t, up, net.JoinHostPort(s.floatingIP, strconv.Itoa(echoInstancePort)), UpstreamIP)
	waitSourceSeen(t, vm, upEcho, s.floatingIP)
	// Without its floating IP the instance goes out through SNAT.
	l.put(t, "/v2.0/floatingips/"+s.fipID, map[string]any{"floatingip": map[string]any{"port_id": nil}})
	waitSourceSeen(t, vm, upEcho, s.gatewayIP)
	l.put(t, "/v2.0/floatingips/"+s.fipID, map[string]any{"floatingip": map[string]any{"port_id": s.portID}})
	waitSourceSeen(t, vm, upEcho, s.floatingIP)
	waitPing(t, up, s.floatingIP)
}

// TestAcceptanceScale100HARouters measures the memory of an agent running
// 100 HA routers (HA network only) with keepalived, and that of the 100
// keepalived instances. It checks that the 100 routers run as they should
// at that scale: each with one master in the kernel, the API agreeing;
// masters spread over the two network nodes as the scheduler put them
// (scaleMasterSlack); one keepalived (two processes) per router per node;
// the agent's and keepalived's memory per router bounded (scaleMaxAgentKB,
// scaleMaxKeepalivedKB). It takes a while: L3HA_LAB_SCALE=1.
func TestAcceptanceScale100HARouters(t *testing.T) {
	needE2E(t)
	if os.Getenv("L3HA_LAB_SCALE") != "1" {
		t.Skip("scale measurement: set L3HA_LAB_SCALE=1")
	}
	const n = 100
	l := startAccLab(t, "sc")
	rssBefore := map[string]int{}
	for _, node := range Nodes {
		p, _ := l.st.process("agent-" + node.Name)
		rssBefore[node.Name], _ = procKB(p.PID, "status", "VmRSS:")
	}
	ids := make([]string, n)
	start := time.Now()
	if err := parallel(n, 4, func(i int) error {
		var r idOnly
		err := l.api.create(t.Context(), "routers", "router", map[string]any{"name": fmt.Sprintf("scale-%03d", i), "ha": true}, &r)
		ids[i] = r.ID
		return err
	}); err != nil {
		t.Fatal(err)
	}
	created := time.Since(start)
	// Converged: every router has one active agent and a keepalived per
	// network node.
	var active, kas int
	if err := waitFor(t.Context(), 10*time.Minute, "100 HA routers with one master each", func() (bool, error) {
		kas = len(keepalivedPIDs(l.dir))
		if kas < 2*2*n { // parent + VRRP child, on two nodes
			return false, nil
		}
		active = 0
		for _, id := range ids {
			agents, err := l.api.routerAgents(t.Context(), id)
			if err != nil {
				return false, nil
			}
			if len(activeHosts(agents)) == 1 {
				active++
			}
		}
		return active == n, nil
	}); err != nil {
		t.Fatalf("%v (%d keepalived processes, %d routers with one master)", err, kas, active)
	}
	converged := time.Since(start)
	masters := map[string]int{}
	for _, node := range networkNodes() {
		masters[node] = 0
	}
	for _, id := range ids {
		var holders []string
		for _, node := range networkNodes() {
			if rk, err := readRouter(l.name, id, node); err == nil && rk.VIP {
				masters[node]++
				holders = append(holders, node)
			}
		}
		if len(holders) != 1 {
			t.Errorf("router %s: VIP held by %v, want one master", id, holders)
		}
	}
	t.Logf("%d HA routers created through the API in %.1f s; every one had a master after %.1f s; masters per node %v",
		n, created.Seconds(), converged.Seconds(), masters)
	// Two agents, two per router: the scheduler gives binding index 1 (the
	// master-to-be) to the node with fewer masters, so 50 each, and later
	// bindings delay their first election so that binding 1 wins. A flap
	// on a loaded machine may move a few.
	for node, m := range masters {
		if m < n/2-scaleMasterSlack {
			t.Errorf("%s is master of %d of %d routers (per node %v): masters not spread over the nodes (want at least %d each)",
				node, m, n, masters, n/2-scaleMasterSlack)
		}
	}
	for _, node := range Nodes {
		p, _ := l.st.process("agent-" + node.Name)
		rss, _ := procKB(p.PID, "status", "VmRSS:")
		pss, _ := procKB(p.PID, "smaps_rollup", "Pss:")
		line := fmt.Sprintf("agent %s (pid %d): VmRSS %d kB (%d kB before the routers), Pss %d kB", node.Name, p.PID, rss, rssBefore[node.Name], pss)
		if node.Network {
			pids := keepalivedPIDs(nodeStateDir(l.dir, node.Name) + "/")
			var sumRSS, sumPSS int
			for _, pid := range pids {
				r, _ := procKB(pid, "status", "VmRSS:")
				q, _ := procKB(pid, "smaps_rollup", "Pss:")
				sumRSS += r
				sumPSS += q
			}
			line += fmt.Sprintf("; its %d keepalived processes (%d routers): total VmRSS %d kB (%.0f kB per router), total Pss %d kB (%.0f kB per router)",
				len(pids), n, sumRSS, float64(sumRSS)/n, sumPSS, float64(sumPSS)/n)
			if len(pids) != 2*n {
				t.Errorf("%s runs %d keepalived processes for %d routers, want %d (parent and VRRP child each)", node.Name, len(pids), n, 2*n)
			}
			if perRouter := sumPSS / n; perRouter > scaleMaxKeepalivedKB {
				t.Errorf("%s: keepalived Pss %d kB per router, want at most %d", node.Name, perRouter, scaleMaxKeepalivedKB)
			}
			if grown := (rss - rssBefore[node.Name]) / n; grown > scaleMaxAgentKB {
				t.Errorf("agent %s: VmRSS grew %d kB per router, want at most %d", node.Name, grown, scaleMaxAgentKB)
			}
		}
		t.Log(line)
	}
}

// Bounds of TestAcceptanceScale100HARouters. Measured on a 2-core machine
// (beside a full `make test`): 50 masters per node; agent VmRSS +220 kB per
// router; keepalived Pss 1.6 MB per router (VmRSS 13 MB: most of it shared).
const (
	scaleMasterSlack     = 10   // masters per node at least n/2 minus this
	scaleMaxAgentKB      = 1024 // agent VmRSS growth per router
	scaleMaxKeepalivedKB = 6144 // keepalived Pss per router (2 processes)
)

// procKB reads a "Key:  N kB" line of /proc/<pid>/<file>.
func procKB(pid int, file, key string) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, file))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, key); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				return strconv.Atoi(f[0])
			}
		}
	}
	return 0, fmt.Errorf("/proc/%d/%s: no %s", pid, file, key)
}

// restartMasterAgentUnnoticed restarts the agent of the router's master
// (FaultAgentRestart, measured; timeout bounds the measurement) and checks
// that nothing noticed: the master kept its addresses and is still the
// master in the kernel and the API, no ping was lost, no agent reported a
// change (the restarted one reports the state it adopted, active), and the
// restarted agent is alive and reports the master again.
func (l *accLab) restartMasterAgentUnnoticed(t *testing.T, s *scenario, addrs []string, timeout time.Duration) (string, *Result) {
	t.Helper()
	master := l.waitSettled(t, s.routerID, addrs, 60*time.Second)
	reportsBefore := l.haReports(s.routerID)
	s.o.Fault, s.o.Timeout, s.o.Settle = FaultAgentRestart, timeout, time.Second
	w := l.watchMaster(s.routerID, master)
	res, err := s.measure(t.Context())
	bad := w.finish()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("agent restart on %s: %s; kernel changes %d, API failover %v, pings sent %d lost %d, longest gap %.3f s",
		master, res.FaultDetail, res.KernelChanges, deref(res.APIFailoverSeconds), res.PingsSent, res.PingsLost, res.LongestGapSeconds)
	if res.MasterBefore != master || res.MasterAfter != master || res.FailoverSeconds != nil || res.KernelChanges != 0 {
		t.Errorf("transition on agent restart: master %s → %s, failover %v s, %d kernel changes", res.MasterBefore, res.MasterAfter, deref(res.FailoverSeconds), res.KernelChanges)
	}
	if len(bad) > 0 {
		t.Errorf("the master's VIP moved during the restart: %v", bad)
	}
	if res.APIFailoverSeconds != nil || res.APIMasterAfter != master {
		t.Errorf("API: active %s after the restart (another host active after %v s)", res.APIMasterAfter, deref(res.APIFailoverSeconds))
	}
	if res.PingsLost != 0 || res.PingsSent == 0 || !res.PingsResumed {
		t.Errorf("pings: %d sent, %d lost (resumed %v), want none lost", res.PingsSent, res.PingsLost, res.PingsResumed)
	}
	after := l.haReports(s.routerID)
	for _, n := range networkNodes() {
		for _, line := range after[n][len(reportsBefore[n]):] {
			if n != master || !strings.Contains(line, "state=active") {
				t.Errorf("%s reported a change: %s", n, line)
			}
		}
	}
	if err := waitFor(t.Context(), 30*time.Second, "the restarted agent to report", func() (bool, error) {
		v, err := l.view(t.Context(), s.routerID)
		return err == nil && v.APIAlive[master] && v.APIStates[master] == "active" && slices.Equal(v.APIActive, []string{master}), nil
	}); err != nil {
		t.Error(err)
	}
	return master, res
}
