package vrrp

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"time"
)

// State is a virtual router's state (RFC 5798 §6.4).
type State int

const (
	Initialize State = iota // not running: no timers, no adverts, no addresses
	Backup                  // watching the master, ready to take over
	Master                  // holding the addresses and advertising
)

func (s State) String() string {
	switch s {
	case Initialize:
		return "initialize"
	case Backup:
		return "backup"
	case Master:
		return "master"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Cause says why a state changed, as a short label for logs, metrics and the
// per-router transition log.
type Cause string

const (
	CauseStartup        Cause = "startup"         // Start entered Backup
	CauseOwner          Cause = "address_owner"   // Start with priority 255 entered Master (§6.4.1)
	CauseAdopted        Cause = "adopted"         // StartMaster: the node already was master
	CauseMasterDown     Cause = "master_down"     // no advert for Master_Down_Interval
	CauseMasterResigned Cause = "master_resigned" // the master sent priority 0
	CausePreempt        Cause = "preempt"         // we outrank the master and preempt it
	CauseHigherPriority Cause = "higher_priority" // a better master appeared (§6.4.3)
	CauseResign         Cause = "resign"          // Resign was called
	CauseShutdown       Cause = "shutdown"        // Shutdown was called
	CauseSwitchover     Cause = "switchover"      // TakeOver was called (an operator's switchover)
	// CauseHealthCheck: a master whose health check failed stepped down to
	// a healthier router, or a healthy backup took over from such a master
	// (Config.HealthPreempt).
	CauseHealthCheck Cause = "health_check"
)

// StartMode says how Start enters the protocol.
type StartMode int

const (
	// StartInit follows RFC 5798 §6.4.1: the address owner (priority 255)
	// becomes Master at once, any other router becomes Backup and waits
	// Master_Down_Interval for a master.
	StartInit StartMode = iota
	// StartBackup enters Backup whatever the priority, so that a restarted
	// router never displaces a live master merely by starting: even the
	// address owner first waits Master_Down_Interval. Whether it later
	// preempts a lower-priority master is up to Preempt and PreemptDelay.
	StartBackup
	// StartMaster adopts mastership the node already holds, for an agent
	// that restarts while its router is master: the addresses are assumed in
	// place, so the machine advertises at once and neither installs
	// addresses nor sends gratuitous ARP. Backups never notice the restart
	// as long as it is shorter than their Master_Down_Interval. If it was
	// longer, another router took over meanwhile: for a Master_Down_Interval
	// the adopted master yields to any master of its priority it hears,
	// rather than take the router back by the address tie-break.
	StartMaster
)

// Config is one virtual router's configuration. Every router of a group must
// agree on Version, VRID, AdvertInterval (v2), Password and Addresses.
type Config struct {
	Version  int   // 2 (RFC 3768) or 3 (RFC 5798)
	VRID     uint8 // 1..255
	Priority uint8 // 1..255; 255 means this router owns the addresses

	// AdvertInterval is how often the master advertises: in v3 a whole
	// number of centiseconds from 10ms to 40.95s, in v2 a whole number of
	// seconds from 1s to 255s.
	AdvertInterval time.Duration

	// Pace, in v2 only, is a shorter advert interval for groups whose other
	// members are l3ha too (zero: none). The master advertises every Pace;
	// its adverts still say AdvertInterval, so keepalived peers accept them
	// as usual. A backup whose master keeps that pace (its adverts arrive at
	// most paceGap apart) times it out after 3*Pace + skew instead of the
	// RFC's 3*AdvertInterval + 1 s; a master that advertises every
	// AdvertInterval, as keepalived does, is timed out as RFC 3768 says. It
	// is how a v3 backup learns the master's interval (RFC 5798 §6.4.2),
	// from the arrival of the adverts instead of a field v2 does not have.
	// An advert that says a longer interval than ours breaks the pace: a
	// master about to restart sends one (see PaceBreakInterval).
	Pace time.Duration

	// Preempt lets a backup take over from a live master of lower priority
	// (RFC Preempt_Mode). False is keepalived's nopreempt, which Neutron
	// uses: once elected, a master stays until it fails or resigns.
	Preempt bool
	// HealthPreempt lets a backup take over from a live master that
	// advertises a lower priority than the backup's own, even without
	// Preempt. In a group whose routers all have one configured priority, as
	// Neutron's, only a master degraded by a failed health check (SetHealthy)
	// advertises less, so this moves the router to a healthy node and never
	// elsewhere: routers that are all unhealthy advertise the same lowered
	// priority and nobody preempts anybody.
	HealthPreempt bool
	// PreemptDelay, with Preempt, is how long a backup keeps accepting a
	// lower-priority master before it starts to preempt it (keepalived's
	// preempt_delay). Zero preempts at once.
	PreemptDelay time.Duration

	// AcceptMode lets the master accept packets addressed to the virtual
	// addresses it does not own (§6.1); it is passed on in InstallAddresses.
	// The owner always accepts.
	AcceptMode bool

	// Primary is this router's own IPv4 address on the VRRP interface: the
	// source of its adverts and the tie-breaker between equal priorities
	// (§6.4.3: the higher address wins).
	Primary netip.Addr

	// Addresses are the IPv4 addresses listed in adverts (keepalived's
	// virtual_ipaddress). Adverts listing other addresses are dropped, as
	// keepalived drops them. Addresses that are installed but not
	// advertised (virtual_ipaddress_excluded) are the adapter's business.
	Addresses []netip.Addr

	// Password enables v2 simple-password authentication (keepalived's
	// "auth_type PASS"); only its first 8 bytes count. Empty means no
	// authentication. v3 has none.
	Password string

	// GARPDelay, if not zero, sends a second round of gratuitous ARP this
	// long after becoming master (keepalived's garp_master_delay), for
	// switches and neighbours that missed the first.
	GARPDelay time.Duration

	// AnswerLowerPriority makes a master answer an advert of lower priority
	// at once with its own, as keepalived does by default, so that the other
	// master of a healed split brain steps down without waiting for our next
	// advert. RFC 5798 §6.4.3 just discards it.
	AnswerLowerPriority bool
}

func (c *Config) validate() error {
	switch {
	case c.Version != 2 && c.Version != 3:
		return fmt.Errorf("vrrp: version %d, want 2 or 3", c.Version)
	case c.VRID == 0:
		return errors.New("vrrp: VRID must be 1..255")
	case c.Priority == 0:
		return errors.New("vrrp: priority must be 1..255 (0 is reserved for resigning)")
	case !c.Primary.Is4():
		return fmt.Errorf("vrrp: primary address %v is not IPv4", c.Primary)
	case len(c.Addresses) > 255:
		return fmt.Errorf("vrrp: %d addresses, at most 255 fit in an advert", len(c.Addresses))
	case c.PreemptDelay < 0 || c.GARPDelay < 0:
		return errors.New("vrrp: negative delay")
	}
	for _, a := range c.Addresses {
		if !a.Is4() {
			return fmt.Errorf("vrrp: address %v is not IPv4", a)
		}
	}
	iv := c.AdvertInterval
	if c.Version == 3 {
		if iv < 10*time.Millisecond || iv > v3MaxInt*10*time.Millisecond || iv%(10*time.Millisecond) != 0 {
			return fmt.Errorf("vrrp: v3 advert interval %v, want whole centiseconds in [10ms, 40.95s]", iv)
		}
		if c.Password != "" {
			return errors.New("vrrp: v3 has no authentication (RFC 5798 §9)")
		}
		if c.Pace != 0 {
			return errors.New("vrrp: pace is for v2; v3 advertises its interval")
		}
		return nil
	}
	if iv < time.Second || iv > 255*time.Second || iv%time.Second != 0 {
		return fmt.Errorf("vrrp: v2 advert interval %v, want whole seconds in [1s, 255s]", iv)
	}
	if c.Pace != 0 && iv == 255*time.Second {
		return errors.New("vrrp: pace needs an advert interval below 255s (its restart advert says one more)")
	}
	if c.Pace != 0 && (c.Pace < 10*time.Millisecond || c.Pace > iv/2) {
		return fmt.Errorf("vrrp: pace %v, want 10ms to half the advert interval (%v)", c.Pace, iv/2)
	}
	return nil
}

// Action is something the caller must do on the machine's behalf. Perform
// the actions a call returns in order: addresses go in before the gratuitous
// ARP that announces them, and StateChanged comes last, once the data plane
// matches the new state.
type Action interface{ isAction() }

// SendAdvert asks the caller to multicast Packet to Group from
// Config.Primary with TTL 255. Packet.Addresses is shared with the machine
// and must not be modified.
type SendAdvert struct{ Packet Packet }

// InstallAddresses asks the caller to configure the router's virtual
// addresses (and whatever else only the master holds: excluded addresses,
// virtual routes). Accept says whether packets addressed to them may be
// accepted (§6.1 Accept_Mode).
type InstallAddresses struct{ Accept bool }

// RemoveAddresses asks the caller to remove what InstallAddresses installed.
type RemoveAddresses struct{}

// SendGratuitousARP asks the caller to announce the virtual addresses with
// gratuitous ARP (§6.4.2), so that neighbours and switches learn where they
// now live.
type SendGratuitousARP struct{}

// SplitBrainWon reports that another router acted as master while this one
// is: it advertised (a split brain, seen when a partition heals) and this
// one wins (§6.4.3: higher priority, or equal and a higher address), so the
// loser steps down when it hears the advert sent with it; or, with
// LoserPriority 0, it stepped down on hearing this one and said so. The
// addresses are announced again with it, since the loser's gratuitous ARP
// may have drawn traffic. For the log: it names the loser. At most one a
// second.
type SplitBrainWon struct {
	Loser         netip.Addr
	LoserPriority uint8
}

// StateChanged reports a transition, including those into and out of
// Initialize.
type StateChanged struct {
	From, To State
	Cause    Cause
}

func (SendAdvert) isAction()        {}
func (InstallAddresses) isAction()  {}
func (RemoveAddresses) isAction()   {}
func (SendGratuitousARP) isAction() {}
func (SplitBrainWon) isAction()     {}
func (StateChanged) isAction()      {}

// Status is a snapshot of a machine, for display and metrics.
type Status struct {
	State State
	// Master is the master as far as this router knows: itself when Master;
	// the source of the last advert it accepted when Backup (invalid if
	// none yet).
	Master         netip.Addr
	MasterPriority uint8
	// MasterAdverInterval is the master's advert interval (v3 learns it from
	// adverts, §6.4.2) and MasterDownInterval the resulting timeout.
	MasterAdverInterval time.Duration
	MasterDownInterval  time.Duration
	// Drops counts the packets Receive dropped, by reason.
	Drops map[Reason]uint64
}

// Machine is the RFC 5798 / RFC 3768 state machine of one virtual router. It
// is not safe for concurrent use: an adapter serialises the calls for each
// machine.
type Machine struct {
	cfg  Config
	auth [8]byte // v2 Authentication Data derived from cfg.Password

	state State
	// masterAdverInterval is the RFC's Master_Adver_Interval: the configured
	// interval, or in a v3 backup the one the current master advertises.
	masterAdverInterval time.Duration

	// Timers, as absolute deadlines; only those of the current state count.
	masterDownAt time.Time // Backup: Master_Down_Timer
	advertAt     time.Time // Master: Adver_Timer
	garpAt       time.Time // Master: delayed gratuitous ARP; zero if none

	// downCause is what a Master_Down_Timer expiry would mean now.
	downCause Cause
	// preemptAt, when preemptArmed, is when PreemptDelay runs out for the
	// lower-priority master we currently accept.
	preemptAt    time.Time
	preemptArmed bool

	master         netip.Addr
	masterPriority uint8
	// boostUntil: after TakeOver, this router advertises one priority
	// above its own until then, so that the master it replaces hears a
	// better master and steps down. unhealthy: SetHealthy(false) lowers the
	// priority it advertises and compares with (see priority).
	boostUntil time.Time
	unhealthy  bool
	// splitGARPAt is when a master last announced its addresses again to
	// the other master of a split brain.
	splitGARPAt time.Time
	// adoptedUntil: a master that StartMaster adopted yields to any other
	// master of equal priority it hears until then (see Start).
	adoptedUntil time.Time
	// paced is true while the current master keeps cfg.Pace; lastFrom and
	// lastAt are the source and arrival of the last advert accepted.
	paced    bool
	lastFrom netip.Addr
	lastAt   time.Time
	drops    map[Reason]uint64 // allocated on the first drop
}

// New returns a machine in Initialize; call Start to run it. It keeps cfg,
// including its Addresses slice, which must not be modified afterwards.
func New(cfg Config) (*Machine, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	m := &Machine{cfg: cfg, state: Initialize, masterAdverInterval: cfg.AdvertInterval}
	if cfg.Version == 2 && cfg.Password != "" {
		m.auth = PasswordAuthData(cfg.Password)
	}
	return m, nil
}

// State returns the current state.
func (m *Machine) State() State { return m.state }

// Config returns the configuration the machine runs with.
func (m *Machine) Config() Config { return m.cfg }

// Status returns a snapshot of the machine.
func (m *Machine) Status() Status {
	s := Status{
		State:               m.state,
		Master:              m.master,
		MasterPriority:      m.masterPriority,
		MasterAdverInterval: m.masterAdverInterval,
		MasterDownInterval:  m.masterDownInterval(),
		Drops:               maps.Clone(m.drops),
	}
	if m.state == Master {
		s.Master, s.MasterPriority = m.cfg.Primary, m.cfg.Priority
	}
	return s
}

// NextDeadline returns when the machine next needs Tick, or the zero time in
// Initialize. It changes only through the machine's own methods, so an
// adapter re-reads it after each call and keeps one timer heap for all its
// machines.
func (m *Machine) NextDeadline() time.Time {
	switch m.state {
	case Backup:
		return m.masterDownAt
	case Master:
		if !m.garpAt.IsZero() && m.garpAt.Before(m.advertAt) {
			return m.garpAt
		}
		return m.advertAt
	}
	return time.Time{}
}

// Start leaves Initialize as mode says. It does nothing if the machine is
// already running.
func (m *Machine) Start(now time.Time, mode StartMode) []Action {
	if m.state != Initialize {
		return nil
	}
	m.masterAdverInterval = m.cfg.AdvertInterval
	switch {
	case mode == StartMaster:
		m.state = Master
		m.advertAt = now.Add(m.sendInterval())
		m.garpAt = time.Time{}
		// Adopting assumes nobody took over while no engine ran. If
		// somebody did (the agent was down longer than the backups'
		// Master_Down_Interval), that master has carried the traffic since:
		// yield to it whatever the addresses say, instead of taking the
		// router back by the tie-break. Backups never advertise, so a
		// restart that nobody noticed hears no one.
		m.adoptedUntil = now.Add(3*m.cfg.AdvertInterval + m.skew())
		return []Action{m.advert(m.priority(now)), StateChanged{Initialize, Master, CauseAdopted}}
	case mode == StartInit && m.cfg.Priority == PriorityOwner:
		return m.becomeMaster(now, CauseOwner)
	default:
		m.becomeBackup(now, m.cfg.AdvertInterval)
		m.master, m.masterPriority = netip.Addr{}, 0
		return []Action{StateChanged{Initialize, Backup, CauseStartup}}
	}
}

// Tick fires the timers that are due at now: Master_Down_Timer in Backup,
// Adver_Timer and the delayed gratuitous ARP in Master. Early or repeated
// ticks are harmless.
func (m *Machine) Tick(now time.Time) []Action {
	switch m.state {
	case Backup:
		// §6.4.2: "If the Master_Down_Timer fires" → become Master.
		if !now.Before(m.masterDownAt) {
			return m.becomeMaster(now, m.downCause)
		}
	case Master:
		var acts []Action
		if !m.garpAt.IsZero() && !now.Before(m.garpAt) {
			m.garpAt = time.Time{}
			acts = append(acts, SendGratuitousARP{})
		}
		// §6.4.3: "If the Adver_Timer fires" → send an advert and reset it.
		if !now.Before(m.advertAt) {
			m.advertAt = now.Add(m.sendInterval())
			acts = append(acts, m.advert(m.priority(now)))
		}
		return acts
	}
	return nil
}

// Shutdown stops the machine (§6.4.2, §6.4.3 "If a Shutdown event is
// received"): a master sends a priority-0 advert so that a backup takes
// over after Skew_Time instead of Master_Down_Interval, and gives up its
// addresses. An agent that restarts and means to adopt its mastership
// (StartMaster) must not call Shutdown.
func (m *Machine) Shutdown(now time.Time) []Action {
	var acts []Action
	switch m.state {
	case Initialize:
		return nil
	case Master:
		acts = append(acts, m.advert(PriorityResign), RemoveAddresses{})
	}
	acts = append(acts, StateChanged{m.state, Initialize, CauseShutdown})
	m.state = Initialize
	m.masterDownAt, m.advertAt, m.garpAt = time.Time{}, time.Time{}, time.Time{}
	m.preemptArmed, m.boostUntil = false, time.Time{}
	return acts
}

// Resign hands mastership over gracefully: a master sends a priority-0
// advert, so that the best backup takes over after its Skew_Time, and itself
// becomes Backup with a full Master_Down_Interval, taking back over only if
// nobody else does. With Preempt and the highest priority it will preempt
// the new master again; resigning is meant for nopreempt groups. Outside
// Master it does nothing.
func (m *Machine) Resign(now time.Time) []Action {
	if m.state != Master {
		return nil
	}
	m.becomeBackup(now, m.cfg.AdvertInterval)
	m.master, m.masterPriority = netip.Addr{}, 0
	return []Action{m.advert(PriorityResign), RemoveAddresses{}, StateChanged{Master, Backup, CauseResign}}
}

// TakeOver makes a backup master at once, for an operator's switchover: it
// installs the addresses and announces them, and from then on advertises
// one priority above its own until 4 advert intervals have passed
// (Config.AdvertInterval), so that the current master, preempting or not,
// hears a better master and steps down; afterwards the priorities are
// equal again and nopreempt keeps the router here. The returned actions
// hold no advert: perform them, and once the addresses are in place call
// Announce, so that the old master lets go only after this one holds them.
// Outside Backup it does nothing.
func (m *Machine) TakeOver(now time.Time) []Action {
	if m.state != Backup {
		return nil
	}
	m.boostUntil = now.Add(4 * m.cfg.AdvertInterval)
	acts := m.becomeMaster(now, CauseSwitchover)
	return slices.DeleteFunc(acts, func(a Action) bool { _, ok := a.(SendAdvert); return ok })
}

// Announce sends a master's advert now and restarts its Adver_Timer (the
// advert TakeOver leaves to the caller). Outside Master it does nothing.
func (m *Machine) Announce(now time.Time) []Action {
	if m.state != Master {
		return nil
	}
	m.advertAt = now.Add(m.sendInterval())
	return []Action{m.advert(m.priority(now))}
}

// SetHealthy records the result of the router's health check (its upstream
// gateway): an unhealthy router advertises and compares with a lower
// priority (see priority), so that a backup with HealthPreempt and a
// healthy check takes the router over, and a master that hears such a
// backup steps down (CauseHealthCheck). A master announces the change at
// once. Routers that are all unhealthy stay as they are.
func (m *Machine) SetHealthy(now time.Time, healthy bool) []Action {
	if m.unhealthy == !healthy {
		return nil
	}
	m.unhealthy = !healthy
	if m.state == Master {
		return m.Announce(now)
	}
	return nil
}

// Healthy reports the last SetHealthy (true until then).
func (m *Machine) Healthy() bool { return !m.unhealthy }

// priority is the priority this router advertises and compares with at
// now: its own, one more during a TakeOver's boost, halved while its health
// check fails (never below 1). The owner (255) is never changed.
func (m *Machine) priority(now time.Time) uint8 {
	p := m.cfg.Priority
	if p == PriorityOwner {
		return p
	}
	if m.unhealthy {
		return max(p/2, 1)
	}
	if now.Before(m.boostUntil) && p < PriorityOwner-1 {
		p++
	}
	return p
}

// Receive processes an advert that Parse accepted, received from src (the
// sender's primary address) with IP TTL ttl. A packet this router must not
// act on is dropped with a *DropError and changes nothing; dropping is
// distinct from the protocol's own "discard the ADVERTISEMENT" rules, which
// are normal operation and return no error.
func (m *Machine) Receive(now time.Time, src netip.Addr, ttl uint8, p Packet) ([]Action, error) {
	if err := m.check(src, ttl, &p); err != nil {
		if m.drops == nil {
			m.drops = make(map[Reason]uint64)
		}
		m.drops[err.Reason]++
		return nil, err
	}
	if m.state == Backup {
		return m.backupReceive(now, src, p), nil
	}
	return m.masterReceive(now, src, p), nil
}

// check applies RFC 5798 §7.1 / RFC 3768 §7.1 and keepalived's own checks:
// what makes a well-formed packet unfit for this virtual router.
func (m *Machine) check(src netip.Addr, ttl uint8, p *Packet) *DropError {
	c := &m.cfg
	switch {
	case m.state == Initialize:
		return drop(ReasonNotRunning, "in %v", m.state)
	case p.Type != TypeAdvertisement:
		return drop(ReasonBadType, "type %d", p.Type)
	case !src.Is4():
		return drop(ReasonBadFamily, "source %v", src)
	case ttl != TTL:
		// A TTL below 255 means the packet crossed a router: not a peer.
		return drop(ReasonBadTTL, "ttl %d", ttl)
	case p.Version != c.Version:
		return drop(ReasonVersionMismatch, "version %d, ours %d", p.Version, c.Version)
	case p.VRID != c.VRID:
		return drop(ReasonVRIDMismatch, "vrid %d, ours %d", p.VRID, c.VRID)
	case c.Priority == PriorityOwner:
		// "MUST verify that ... the local router is not the IPvX address
		// owner": the owner listens to nobody.
		return drop(ReasonLocalOwner, "from %v", src)
	case src == c.Primary:
		// Our own advert looped back, or a peer with our address: acting on
		// it would compare us with ourselves.
		return drop(ReasonOwnAdvert, "from %v", src)
	}
	if c.Version == 2 {
		want := uint8(AuthNone)
		if c.Password != "" {
			want = AuthPassword
		}
		switch {
		case p.AuthType != want:
			return drop(ReasonAuthTypeMismatch, "auth type %d, ours %d", p.AuthType, want)
		case want == AuthPassword && !p.PasswordMatches(m.auth):
			return drop(ReasonAuthMismatch, "bad password from %v", src)
		case p.Interval() != c.AdvertInterval && (c.Pace == 0 || p.Interval() < c.AdvertInterval):
			// RFC 3768 §7.1: "MUST verify that the Adver Interval in the
			// packet is the same as the locally configured": v2 cannot
			// learn the master's interval, so a mismatch would make a
			// backup time out on a live master. A paced router accepts a
			// longer one, which only makes it wait longer: it breaks the
			// pace.
			return drop(ReasonIntervalMismatch, "interval %v, ours %v", p.Interval(), c.AdvertInterval)
		}
	} else if p.MaxAdvertInterval == 0 {
		// A backup learning interval 0 would time out at once (§6.4.2).
		return drop(ReasonBadInterval, "max adver int 0 from %v", src)
	}
	// The address check is a MAY in both RFCs; keepalived makes it a MUST, so
	// do we, to agree with it on who is a valid master. RFC 3768 §7.1 lets
	// the owner's adverts through regardless.
	if p.Priority != PriorityOwner && !sameAddresses(p.Addresses, c.Addresses) {
		return drop(ReasonAddressMismatch, "addresses %v, ours %v", p.Addresses, c.Addresses)
	}
	return nil
}

// sameAddresses compares address lists as sets of equal size, since a
// peer may list them in another order.
func sameAddresses(got, want []netip.Addr) bool {
	if len(got) != len(want) {
		return false
	}
	for _, a := range want {
		if !slices.Contains(got, a) {
			return false
		}
	}
	return true
}

// backupReceive is §6.4.2 "If an ADVERTISEMENT is received".
func (m *Machine) backupReceive(now time.Time, src netip.Addr, p Packet) []Action {
	if p.Priority == PriorityResign {
		// The master resigned: take over after Skew_Time only, so that the
		// backup with the highest priority (shortest skew) wins.
		m.masterDownAt = now.Add(m.skew())
		m.downCause = CauseMasterResigned
		return nil
	}
	lower := p.Priority < m.priority(now)
	if !lower {
		m.preemptArmed = false
	}
	accept := !(m.cfg.Preempt || m.cfg.HealthPreempt) || !lower
	if !accept && m.cfg.PreemptDelay > 0 {
		// keepalived's preempt_delay: tolerate a lower-priority master
		// for a while, counted from the first of its adverts we see.
		if !m.preemptArmed {
			m.preemptArmed, m.preemptAt = true, now.Add(m.cfg.PreemptDelay)
		}
		accept = now.Before(m.preemptAt)
	}
	if !accept {
		// Discard: with Preempt we outrank this master, and letting
		// Master_Down_Timer run out is how we take over.
		m.downCause = CausePreempt
		if !m.cfg.Preempt {
			m.downCause = CauseHealthCheck // HealthPreempt alone
		}
		return nil
	}
	switch {
	case m.cfg.Version == 3:
		m.masterAdverInterval = p.Interval()
	case m.cfg.Pace != 0:
		m.masterAdverInterval = m.learnPace(now, src, p)
	}
	m.masterDownAt = now.Add(m.masterDownInterval())
	m.downCause = CauseMasterDown
	m.master, m.masterPriority = src, p.Priority
	return nil
}

// masterReceive is §6.4.3 "If an ADVERTISEMENT is received".
func (m *Machine) masterReceive(now time.Time, src netip.Addr, p Packet) []Action {
	mine := m.priority(now)
	switch {
	case p.Priority == PriorityResign:
		// Another router resigned while we are master (the loser of a
		// split brain, or the master a switchover replaced): reassert at
		// once so that backups that just armed their skew timer see a
		// master and stay, and take the traffic back.
		m.advertAt = now.Add(m.sendInterval())
		return append([]Action{m.advert(mine)}, m.reannounce(now, src, p.Priority)...)
	case p.Priority > mine || p.Priority == mine && (src.Compare(m.cfg.Primary) > 0 || now.Before(m.adoptedUntil)):
		// A better master: higher priority, or equal priority and a higher
		// primary address.
		iv := m.cfg.AdvertInterval
		if m.cfg.Version == 3 {
			iv = p.Interval()
		}
		cause := CauseHigherPriority
		if m.unhealthy {
			cause = CauseHealthCheck
		}
		m.becomeBackup(now, iv)
		m.master, m.masterPriority = src, p.Priority
		// The priority-0 advert tells the winner, which may never have
		// heard us, that the split brain is over: it announces the
		// addresses again (see SplitBrainWon).
		return []Action{m.advert(PriorityResign), RemoveAddresses{}, StateChanged{Master, Backup, cause}}
	case m.cfg.AnswerLowerPriority:
		// Two masters, and we win: answer at once so that the other steps
		// down within one round trip, and announce the addresses again, as
		// the loser's gratuitous ARP may have drawn traffic to it.
		// Adver_Timer is left alone: this advert is extra.
		return append([]Action{m.advert(mine)}, m.reannounce(now, src, p.Priority)...)
	}
	return nil // §6.4.3: discard
}

// reannounce is what a master that won against loser does besides
// advertising: say so and announce its addresses again, at most once a
// second, so that a peer that never hears us cannot turn each of its adverts
// into a burst of ARP.
func (m *Machine) reannounce(now time.Time, loser netip.Addr, priority uint8) []Action {
	if now.Sub(m.splitGARPAt) < time.Second {
		return nil
	}
	m.splitGARPAt = now
	return []Action{SplitBrainWon{Loser: loser, LoserPriority: priority}, SendGratuitousARP{}}
}

// becomeMaster is §6.4.1 / §6.4.2's way into Master: advertise, install the
// addresses, announce them, arm Adver_Timer.
func (m *Machine) becomeMaster(now time.Time, cause Cause) []Action {
	from := m.state
	m.state = Master
	m.advertAt = now.Add(m.sendInterval())
	m.garpAt = time.Time{}
	if m.cfg.GARPDelay > 0 {
		m.garpAt = now.Add(m.cfg.GARPDelay)
	}
	m.preemptArmed = false
	return []Action{
		m.advert(m.priority(now)),
		InstallAddresses{Accept: m.cfg.AcceptMode || m.cfg.Priority == PriorityOwner},
		SendGratuitousARP{},
		StateChanged{from, Master, cause},
	}
}

// becomeBackup enters Backup with Master_Adver_Interval iv and arms
// Master_Down_Timer. The caller reports the transition.
func (m *Machine) becomeBackup(now time.Time, iv time.Duration) {
	m.state = Backup
	m.masterAdverInterval, m.paced = iv, false
	m.masterDownAt = now.Add(m.masterDownInterval())
	m.downCause = CauseMasterDown
	m.advertAt, m.garpAt = time.Time{}, time.Time{}
	m.preemptArmed = false
	m.boostUntil, m.adoptedUntil = time.Time{}, time.Time{}
}

// skew is Skew_Time: RFC 5798 §6.1 (256-Priority)*Master_Adver_Interval/256
// in v3, RFC 3768 §6.1 (256-Priority)/256 seconds in v2. It is computed in
// nanoseconds, not rounded down to centiseconds as the RFC's integer
// arithmetic would, like keepalived's microseconds; the difference is below
// 10ms and only orders backups of different priority, which it preserves.
func (m *Machine) skew() time.Duration {
	unit := time.Second
	if m.cfg.Version == 3 || m.paced {
		// A paced master's skew scales with its pace as in v3: a whole
		// second would be most of the paced Master_Down_Interval.
		unit = m.masterAdverInterval
	}
	return time.Duration(256-int64(m.cfg.Priority)) * unit / 256
}

// masterDownInterval is Master_Down_Interval, 3*Master_Adver_Interval +
// Skew_Time (RFC 5798 §6.1; RFC 3768 §6.1 with Advertisement_Interval, which
// in v2 is always the master's).
func (m *Machine) masterDownInterval() time.Duration {
	return 3*m.masterAdverInterval + m.skew()
}

// sendInterval is how often this router advertises as master.
func (m *Machine) sendInterval() time.Duration {
	if m.cfg.Pace != 0 {
		return m.cfg.Pace
	}
	return m.cfg.AdvertInterval
}

// paceGap is the longest gap between two adverts of a master that keeps the
// pace: one or two lost adverts, or a master late by up to two paces, still
// count; keepalived's adverts, AdvertInterval apart, never do.
func (m *Machine) paceGap() time.Duration { return min(3*m.cfg.Pace, m.cfg.AdvertInterval/2) }

// learnPace returns the Master_Adver_Interval that an advert accepted from
// src at now implies for a paced backup, and records it.
func (m *Machine) learnPace(now time.Time, src netip.Addr, p Packet) time.Duration {
	m.paced = src == m.lastFrom && !m.lastAt.IsZero() && now.Sub(m.lastAt) <= m.paceGap() &&
		p.Interval() == m.cfg.AdvertInterval
	m.lastFrom, m.lastAt = src, now
	if m.paced {
		return m.cfg.Pace
	}
	return m.cfg.AdvertInterval
}

// PaceBreakInterval is the Adver Int (v2) of the advert a paced master sends
// when it stops for a restart: a longer interval than the group's, which its
// paced backups accept and which makes them wait the RFC's
// Master_Down_Interval for the next engine instead of three paces.
// keepalived peers drop that one advert (interval mismatch).
func PaceBreakInterval(advertInterval time.Duration) uint8 {
	return uint8(advertInterval/time.Second) + 1
}

// advert builds the advert this router sends with the given priority.
func (m *Machine) advert(priority uint8) SendAdvert {
	p := Packet{
		Version:   m.cfg.Version,
		Type:      TypeAdvertisement,
		VRID:      m.cfg.VRID,
		Priority:  priority,
		Addresses: m.cfg.Addresses,
	}
	if m.cfg.Version == 3 {
		p.MaxAdvertInterval = uint16(m.cfg.AdvertInterval / (10 * time.Millisecond))
	} else {
		p.AdvertInterval = uint8(m.cfg.AdvertInterval / time.Second)
		if m.cfg.Password != "" {
			p.AuthType, p.AuthData = AuthPassword, m.auth
		}
	}
	return SendAdvert{Packet: p}
}
