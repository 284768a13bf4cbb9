package vrrp

import (
	"errors"
	"fmt"
)

// Reason says why a received packet was dropped. The values are short
// snake_case labels so that an adapter can use them directly as a metric
// label.
type Reason string

// Reasons reported by Parse: the bytes are not a valid VRRP advertisement.
const (
	ReasonTruncated      Reason = "truncated"          // shorter than its header or its Count of addresses says
	ReasonLengthMismatch Reason = "length_mismatch"    // longer than its Count of addresses says
	ReasonBadVersion     Reason = "bad_version"        // neither 2 nor 3
	ReasonBadType        Reason = "bad_type"           // not an ADVERTISEMENT (type 1)
	ReasonBadChecksum    Reason = "bad_checksum"       // checksum does not verify
	ReasonBadFamily      Reason = "bad_address_family" // source or destination is not IPv4
)

// Reasons reported by Machine.Receive: a well-formed packet this virtual
// router must not act on (RFC 5798 §7.1, RFC 3768 §7.1).
const (
	ReasonNotRunning       Reason = "not_running"        // machine is in Initialize
	ReasonBadTTL           Reason = "bad_ttl"            // IP TTL is not 255
	ReasonVersionMismatch  Reason = "version_mismatch"   // VRRP version differs from ours
	ReasonVRIDMismatch     Reason = "vrid_mismatch"      // VRID differs from ours
	ReasonLocalOwner       Reason = "local_owner"        // we own the addresses (priority 255)
	ReasonOwnAdvert        Reason = "own_advert"         // source is our own primary address
	ReasonAuthTypeMismatch Reason = "auth_type_mismatch" // v2 Auth Type differs from ours
	ReasonAuthMismatch     Reason = "auth_mismatch"      // v2 password differs from ours
	ReasonIntervalMismatch Reason = "interval_mismatch"  // v2 Adver Int differs from ours
	ReasonBadInterval      Reason = "bad_interval"       // v3 Max Adver Int is zero
	ReasonAddressMismatch  Reason = "address_mismatch"   // address list differs from ours
)

// DropError reports a dropped packet. Compare with errors.Is against a
// DropError carrying only a Reason, or read the Reason with ReasonOf.
type DropError struct {
	Reason Reason
	Detail string // human-readable specifics for logs; may be empty
}

func (e *DropError) Error() string {
	if e.Detail == "" {
		return "vrrp: dropped: " + string(e.Reason)
	}
	return "vrrp: dropped: " + string(e.Reason) + ": " + e.Detail
}

// Is makes errors.Is(err, &DropError{Reason: r}) match any drop for reason r,
// whatever its Detail.
func (e *DropError) Is(target error) bool {
	t, ok := target.(*DropError)
	return ok && t.Reason == e.Reason && (t.Detail == "" || t.Detail == e.Detail)
}

// ReasonOf returns the Reason of a *DropError in err's chain, or "" if there
// is none.
func ReasonOf(err error) Reason {
	var d *DropError
	if errors.As(err, &d) {
		return d.Reason
	}
	return ""
}

func drop(r Reason, format string, args ...any) *DropError {
	return &DropError{Reason: r, Detail: fmt.Sprintf(format, args...)}
}
