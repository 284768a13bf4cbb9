package lab

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
)

// restoreTimeout bounds restoring a faulted node: its agent restarts,
// registers again and re-asserts its routers' states.
const restoreTimeout = 60 * time.Second

// restore undoes the fault injected into node after a failover measured in
// a lab that stays up (it was up before, or --keep), so that the next
// failover finds two healthy network nodes: the ha- device goes up again,
// a cut node's links go up and its agent is started again, a stopped
// agent is started again. It waits until the node's agent is alive in the
// API and shows the router standby (nopreempt keeps the new master), and
// returns what it did. Faults that move nothing (a restart, a switchover)
// leave nothing to undo.
func (s *scenario) restore(ctx context.Context, node string) (string, error) {
	var did []string
	switch s.o.Fault {
	case FaultHALink:
		rns := RouterNamespace(s.lab(), s.routerID, node)
		dev, err := setHADevice(rns, true)
		if err != nil {
			return "", fmt.Errorf("restoring %s: %w", node, err)
		}
		did = append(did, dev+" up in "+rns)
	case FaultNode:
		// A dead node comes back as a rebooted one: nothing of its old
		// boot is left, its agent starts afresh and makes it a backup.
		if err := rebootNode(ctx, s.st, node); err != nil {
			return "", fmt.Errorf("rebooting %s: %w", node, err)
		}
		p, _ := s.st.process("agent-" + node)
		did = append(did, fmt.Sprintf("%s rebooted: its router namespaces and L2 devices removed, %s and %s up, its agent started again (pid %d)", node, devFabric, devExternal, p.PID))
	case FaultAgentStop:
		if p, ok := s.st.process("agent-" + node); ok && p.running() {
			// A graceful stop still winding down: let it end.
			_ = p.signal(syscall.SIGTERM)
		}
		np, err := restartAgent(ctx, s.st, node)
		if err != nil {
			return "", fmt.Errorf("restarting the agent of %s: %w", node, err)
		}
		did = append(did, fmt.Sprintf("agent of %s started again (pid %d)", node, np.PID))
	default:
		return "", nil
	}
	if err := waitFor(ctx, restoreTimeout, node+" alive again and standby for the router", func() (bool, error) {
		agents, err := s.api.routerAgents(ctx, s.routerID)
		if err != nil {
			return false, nil
		}
		for _, a := range agents {
			if a.Host == node {
				return a.Alive && a.HAState != nil && *a.HAState == "standby", nil
			}
		}
		return false, nil
	}); err != nil {
		return "", err
	}
	return strings.Join(did, "; "), nil
}

// rebootNode brings a node cut off by FaultNode back as a rebooted machine
// would come: nothing of the old boot is left (its router namespaces'
// processes are killed, the namespaces deleted, and the bridges and VXLAN
// devices its agent made removed), its links come up, and its agent starts
// again with the same arguments and state directory.
func rebootNode(ctx context.Context, st *State, node string) error {
	nss, err := listNamespaces(func(ns string) bool {
		return uuidNS.MatchString(ns) && strings.HasSuffix(ns, NetnsSuffix(st.Name, node)) && ownsNamespace(st.Name, ns)
	})
	if err != nil {
		return err
	}
	inodes := map[uint64]bool{}
	for _, ns := range nss {
		if ino := nsInode(ns); ino != 0 {
			inodes[ino] = true
		}
	}
	if pids := pidsInNamespaces(inodes); len(pids) > 0 {
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if err := waitFor(ctx, 10*time.Second, "the node's processes to die", func() (bool, error) {
			for _, pid := range pids {
				if alive(pid) {
					return false, nil
				}
			}
			return true, nil
		}); err != nil {
			return err
		}
	}
	for _, ns := range nss {
		if err := deleteNamespace(ns); err != nil {
			return err
		}
	}
	if err := withHandle(NodeNamespace(st.Name, node), func(h *netlink.Handle) error {
		// The agent's L2 of the old boot goes too: bridges, VXLAN devices
		// (with their flood entries) and veth ends.
		links, err := retryDump(h.LinkList)
		if err != nil {
			return err
		}
		for _, k := range links {
			if hasPrefixAny(k.Attrs().Name, "brq", "vxlan-", "tap") {
				if err := h.LinkDel(k); err != nil && !isNotFound(err) {
					return fmt.Errorf("deleting %s: %w", k.Attrs().Name, err)
				}
			}
		}
		for _, dev := range []string{devFabric, devExternal} {
			k, err := h.LinkByName(dev)
			if err != nil {
				return err
			}
			if err := h.LinkSetUp(k); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return err
	}
	_, err = restartAgent(ctx, st, node)
	return err
}

// setHADevice sets the ha- device of router namespace rns up or down and
// returns its name.
func setHADevice(rns string, up bool) (string, error) {
	var name string
	err := withHandle(rns, func(h *netlink.Handle) error {
		links, err := retryDump(h.LinkList)
		if err != nil {
			return err
		}
		for _, l := range links {
			if strings.HasPrefix(l.Attrs().Name, "ha-") {
				name = l.Attrs().Name
				if up {
					return h.LinkSetUp(l)
				}
				return h.LinkSetDown(l)
			}
		}
		return fmt.Errorf("no ha- device in %s", rns)
	})
	return name, err
}

// setLink sets dev in namespace ns up or down.
func setLink(ns, dev string, up bool) error {
	return withHandle(ns, func(h *netlink.Handle) error {
		l, err := h.LinkByName(dev)
		if err != nil {
			return fmt.Errorf("%s: %s: %w", ns, dev, err)
		}
		if up {
			return h.LinkSetUp(l)
		}
		return h.LinkSetDown(l)
	})
}
