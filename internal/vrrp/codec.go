package vrrp

import (
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Protocol constants shared by both versions.
const (
	IPProtocol        = 112 // IP protocol number of VRRP (RFC 5798 §5.1.1.4)
	TTL               = 255 // IPv4 TTL of every advert, checked on receipt (§5.1.1.3)
	TypeAdvertisement = 1   // the only VRRP message type (§5.2.2)
	PriorityOwner     = 255 // the address owner's priority (§5.2.4)
	PriorityResign    = 0   // "the master stopped": backups take over at once (§5.2.4)
)

// Group is the IPv4 multicast group adverts are sent to (RFC 5798 §5.1.1.2).
var Group = netip.AddrFrom4([4]byte{224, 0, 0, 18})

// VRRPv2 authentication types (RFC 2338 §5.3.6). RFC 3768 dropped
// authentication, but keepalived still sends and checks type 1, and Neutron
// configures it ("auth_type PASS").
const (
	AuthNone     = 0
	AuthPassword = 1 // 8 bytes of cleartext password in the Authentication Data
	AuthAH       = 2 // IPsec AH; not supported here
)

const (
	headerLen = 8 // fields common to v2 and v3, up to and including Checksum
	authLen   = 8 // v2 Authentication Data, always present in v2 over IPv4
	v3MaxInt  = 0x0fff
)

// Packet is a VRRP advertisement, decoded. Fields that belong to one version
// only must be zero in the other: Marshal refuses them, Parse leaves them
// zero.
type Packet struct {
	Version  int // 2 or 3
	Type     int // TypeAdvertisement
	VRID     uint8
	Priority uint8

	// MaxAdvertInterval is the v3 Max Adver Int, in centiseconds, 12 bits.
	MaxAdvertInterval uint16

	// v2 only.
	AdvertInterval uint8   // Adver Int, in seconds
	AuthType       uint8   // AuthNone or AuthPassword
	AuthData       [8]byte // the password for AuthPassword; ignored otherwise

	// Addresses are the IPv4 addresses the virtual router protects, in the
	// order the sender lists them.
	Addresses []netip.Addr
}

// Interval returns the advertisement interval the packet carries, whatever
// its version.
func (p Packet) Interval() time.Duration {
	if p.Version == 2 {
		return time.Duration(p.AdvertInterval) * time.Second
	}
	return time.Duration(p.MaxAdvertInterval) * 10 * time.Millisecond
}

// PasswordAuthData returns the v2 Authentication Data for password as
// keepalived builds it: the first 8 bytes of the password, zero-padded.
// Longer passwords are truncated, so two passwords that share their first 8
// bytes authenticate each other, exactly as with keepalived.
func PasswordAuthData(password string) [8]byte {
	var d [8]byte
	copy(d[:], password)
	return d
}

// PasswordMatches reports whether p carries simple-password authentication
// with the given Authentication Data (see PasswordAuthData). All 8 bytes are
// compared, padding included, as keepalived does.
func (p Packet) PasswordMatches(auth [8]byte) bool {
	return p.AuthType == AuthPassword && subtle.ConstantTimeCompare(p.AuthData[:], auth[:]) == 1
}

// Len returns the length of p on the wire.
func (p Packet) Len() int {
	n := headerLen + 4*len(p.Addresses)
	if p.Version == 2 {
		n += authLen
	}
	return n
}

// Marshal encodes p as a VRRP message (the IP payload) and fills in its
// checksum. src and dst are the IPv4 source and destination the packet will
// be sent with: VRRPv3 covers them with its checksum (RFC 5798 §5.2.8);
// VRRPv2 does not (RFC 3768 §5.3.8) and ignores them.
func Marshal(p Packet, src, dst netip.Addr) ([]byte, error) {
	if err := p.validate(); err != nil {
		return nil, err
	}
	if p.Version == 3 && (!src.Is4() || !dst.Is4()) {
		return nil, fmt.Errorf("vrrp: v3 checksum needs IPv4 source and destination, got %v and %v", src, dst)
	}
	b := make([]byte, p.Len())
	b[0] = byte(p.Version)<<4 | byte(p.Type)
	b[1] = p.VRID
	b[2] = p.Priority
	b[3] = byte(len(p.Addresses))
	if p.Version == 3 {
		// The 4 reserved bits are zero on transmission (§5.2.6).
		binary.BigEndian.PutUint16(b[4:], p.MaxAdvertInterval)
	} else {
		b[4] = p.AuthType
		b[5] = p.AdvertInterval
	}
	off := headerLen
	for _, a := range p.Addresses {
		a4 := a.As4()
		off += copy(b[off:], a4[:])
	}
	if p.Version == 2 {
		copy(b[off:], p.AuthData[:])
	}
	binary.BigEndian.PutUint16(b[6:], ^fold(sum(p.Version, b, src, dst)))
	return b, nil
}

// validate rejects what cannot be encoded or what a peer would reject.
func (p Packet) validate() error {
	switch {
	case p.Version != 2 && p.Version != 3:
		return fmt.Errorf("vrrp: version %d, want 2 or 3", p.Version)
	case p.Type != TypeAdvertisement:
		return fmt.Errorf("vrrp: type %d, want %d", p.Type, TypeAdvertisement)
	case len(p.Addresses) > 255:
		return fmt.Errorf("vrrp: %d addresses, at most 255 fit", len(p.Addresses))
	}
	for _, a := range p.Addresses {
		if !a.Is4() {
			return fmt.Errorf("vrrp: address %v is not IPv4", a)
		}
	}
	if p.Version == 3 {
		if p.MaxAdvertInterval > v3MaxInt {
			return fmt.Errorf("vrrp: v3 interval %d cs does not fit 12 bits", p.MaxAdvertInterval)
		}
		if p.AdvertInterval != 0 || p.AuthType != 0 || p.AuthData != [8]byte{} {
			return errors.New("vrrp: v3 has no Adver Int (seconds) or authentication fields")
		}
		return nil
	}
	if p.MaxAdvertInterval != 0 {
		return errors.New("vrrp: v2 has no Max Adver Int (centiseconds) field")
	}
	return nil
}

// Parse decodes a VRRP message (the IP payload) received from src, sent to
// dst, and verifies it: version, type, length and checksum. Every failure is
// a *DropError. What depends on the virtual router's configuration (VRID,
// TTL, authentication, interval) is Machine.Receive's job.
func Parse(b []byte, src, dst netip.Addr) (Packet, error) {
	if len(b) < headerLen {
		return Packet{}, drop(ReasonTruncated, "%d bytes, header needs %d", len(b), headerLen)
	}
	p := Packet{
		Version:  int(b[0] >> 4),
		Type:     int(b[0] & 0x0f),
		VRID:     b[1],
		Priority: b[2],
	}
	if p.Version != 2 && p.Version != 3 {
		return Packet{}, drop(ReasonBadVersion, "version %d", p.Version)
	}
	if p.Type != TypeAdvertisement {
		return Packet{}, drop(ReasonBadType, "type %d", p.Type)
	}
	n := int(b[3])
	want := headerLen + 4*n
	if p.Version == 2 {
		want += authLen
	}
	// keepalived drops a packet whose length differs from what its count
	// implies in either direction; so do we, so that both agree on what is a
	// valid advert.
	if len(b) < want {
		return Packet{}, drop(ReasonTruncated, "%d bytes, %d addresses need %d", len(b), n, want)
	}
	if len(b) > want {
		return Packet{}, drop(ReasonLengthMismatch, "%d bytes, %d addresses need %d", len(b), n, want)
	}
	if p.Version == 3 && (!src.Is4() || !dst.Is4()) {
		return Packet{}, drop(ReasonBadFamily, "source %v, destination %v", src, dst)
	}
	// A correct checksum makes the one's-complement sum of everything it
	// covers, itself included, all ones.
	if s := fold(sum(p.Version, b, src, dst)); s != 0xffff {
		return Packet{}, drop(ReasonBadChecksum, "checksum %#04x, sum %#04x", binary.BigEndian.Uint16(b[6:]), s)
	}
	if p.Version == 3 {
		// The reserved high 4 bits are ignored on reception (§5.2.6).
		p.MaxAdvertInterval = binary.BigEndian.Uint16(b[4:]) & v3MaxInt
	} else {
		p.AuthType = b[4]
		p.AdvertInterval = b[5]
		copy(p.AuthData[:], b[headerLen+4*n:])
	}
	p.Addresses = make([]netip.Addr, n)
	for i := range n {
		p.Addresses[i] = netip.AddrFrom4([4]byte(b[headerLen+4*i:]))
	}
	return p, nil
}

// sum is the unfolded one's-complement sum of what the checksum covers: the
// VRRP message (the checksum field included as it stands) and, for v3, the
// IPv4 pseudo-header (RFC 5798 §5.2.8, the same as UDP's in RFC 768).
func sum(version int, b []byte, src, dst netip.Addr) uint32 {
	s := words(0, b)
	if version == 3 {
		s4, d4 := src.As4(), dst.As4()
		s = words(s, s4[:])
		s = words(s, d4[:])
		s += IPProtocol     // zero byte, then protocol
		s += uint32(len(b)) // VRRP message length, 16 bits
	}
	return s
}

// words adds b to s as big-endian 16-bit words. VRRP messages are a whole
// number of words (8-byte header, 4-byte addresses, 8-byte auth data), and
// Parse checks the length before summing, so there is no odd byte to pad.
func words(s uint32, b []byte) uint32 {
	for ; len(b) >= 2; b = b[2:] {
		s += uint32(binary.BigEndian.Uint16(b))
	}
	return s
}

// fold adds the carries of a 32-bit one's-complement sum back into its low 16
// bits.
func fold(s uint32) uint16 {
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}
