// Package keepalived is the keepalived HA driver: it renders Neutron's
// keepalived.conf for a router, runs and supervises one keepalived per router
// inside its namespace, reloads it only when its config changed (coalesced),
// and learns VRRP transitions without a per-router helper process.
//
// Rendering (Config, Render, FromRouter) is pure and reproduces, byte for
// byte, the keepalived.conf that Neutron's L3 agent writes: the same blocks in
// the same order, 4-space indent, virtual_ipaddress_excluded sorted by
// address, and no newline after the final brace.
//
// A Manager (one per agent) keeps the files of each router under
// <StateDir>/ha_confs/<router_id>/ and runs
//
//	ip netns exec <ns> keepalived --dont-fork --log-console --log-detail \
//	    --no-syslog --vrrp -f <conf> -p <pid> -r <vrrp pid>
//
// (its console log going to keepalived.log beside the config) in its own
// process group and without a parent-death signal, so that a
// terminal's Ctrl-C or an agent restart never disturbs a master. Config changes
// are written at once and signalled with one SIGHUP per ReloadDelay window
// however many changes arrive in it (a SIGHUP storm makes keepalived give up
// mastership, LP#1647432); an unchanged config sends nothing. A keepalived that
// dies unexpectedly is respawned with exponential backoff. A restarted agent
// adopts the keepalived processes it finds through their pid files (checking
// /proc/<pid>/cmdline so that a recycled pid is never adopted) and watches
// them with a pidfd, since they are no longer its children.
//
// Transitions are learnt from the kernel, not from a helper process per router
// (Neutron's neutron-keepalived-state-change): one goroutine per router
// namespace subscribes to address notifications there and watches the VRRP
// VIP 169.254.0.<vrid>/24, which keepalived holds only as master. A state is
// reported only after it has persisted for one advert interval (Neutron's fix
// of LP#1837635), and the state found when a watcher starts is reported at
// once, so that an adopted router's current state is known after a restart.
package keepalived
