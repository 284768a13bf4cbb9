// Package config resolves l3ha options from three sources, in order of
// precedence: command-line flags, environment variables L3HA_<OPTION>, and
// an INI config file using Neutron's option names (any section). Options are
// declared once with their Neutron name; the flag is the same name with
// dashes.
package config

import (
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"gopkg.in/ini.v1"
)

// Option is one declared option.
type Option struct {
	Name    string // Neutron-style name with underscores, e.g. agent_down_time
	Default string
	Usage   string
}

// Set is a group of options bound to a flag set.
type Set struct {
	opts   []Option
	flags  *pflag.FlagSet
	values map[string]*string
	file   *string
	env    func(string) (string, bool)
}

// New declares opts on flags, plus --config-file.
func New(flags *pflag.FlagSet, opts []Option) *Set {
	s := &Set{opts: opts, flags: flags, values: map[string]*string{}, env: os.LookupEnv}
	s.file = flags.String("config-file", "", "INI file with options by their Neutron names (flags and L3HA_* environment variables win over it)")
	for _, o := range opts {
		s.values[o.Name] = flags.String(FlagName(o.Name), o.Default, o.Usage+" (env "+EnvName(o.Name)+")")
	}
	return s
}

// FlagName is the flag spelling of an option name.
func FlagName(name string) string { return strings.ReplaceAll(name, "_", "-") }

// EnvName is the environment variable of an option name.
func EnvName(name string) string {
	return "L3HA_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// Values is the resolved option set.
type Values struct {
	raw    map[string]string
	errs   []string
	source map[string]string
}

// Resolve applies precedence flag > environment > file > default.
func (s *Set) Resolve() (*Values, error) {
	file := map[string]string{}
	path := *s.file
	if !s.flags.Changed("config-file") {
		if v, ok := s.env("L3HA_CONFIG_FILE"); ok {
			path = v
		}
	}
	if path != "" {
		f, err := ini.Load(path)
		if err != nil {
			return nil, fmt.Errorf("reading config file %s: %w", path, err)
		}
		for _, sec := range f.Sections() {
			for _, k := range sec.Keys() {
				file[k.Name()] = k.Value()
			}
		}
	}
	known := map[string]bool{}
	v := &Values{raw: map[string]string{}, source: map[string]string{}}
	for _, o := range s.opts {
		known[o.Name] = true
		switch env, ok := s.env(EnvName(o.Name)); {
		case s.flags.Changed(FlagName(o.Name)):
			v.raw[o.Name], v.source[o.Name] = *s.values[o.Name], "flag"
		case ok:
			v.raw[o.Name], v.source[o.Name] = env, "environment"
		case file[o.Name] != "":
			v.raw[o.Name], v.source[o.Name] = file[o.Name], "file"
		default:
			v.raw[o.Name], v.source[o.Name] = o.Default, "default"
		}
	}
	for k := range file {
		if !known[k] {
			return nil, fmt.Errorf("config file %s: unknown option %q", path, k)
		}
	}
	return v, nil
}

func (v *Values) fail(name, want string) {
	v.errs = append(v.errs, fmt.Sprintf("option %s=%q (from %s): %s", name, v.raw[name], v.source[name], want))
}

// Err reports every option that failed to parse.
func (v *Values) Err() error {
	if len(v.errs) == 0 {
		return nil
	}
	return fmt.Errorf("invalid configuration: %s", strings.Join(v.errs, "; "))
}

// String returns an option's value.
func (v *Values) String(name string) string { return v.raw[name] }

// Bool parses a boolean option (true/false/1/0/yes/no, any case).
func (v *Values) Bool(name string) bool {
	switch strings.ToLower(strings.TrimSpace(v.raw[name])) {
	case "true", "1", "yes", "on":
		return true
	case "false", "0", "no", "off", "":
		return false
	}
	v.fail(name, "want true or false")
	return false
}

// Int parses an integer option that must be at least min.
func (v *Values) Int(name string, min int) int {
	n, err := strconv.Atoi(strings.TrimSpace(v.raw[name]))
	if err != nil || n < min {
		v.fail(name, fmt.Sprintf("want an integer ≥ %d", min))
	}
	return n
}

// Seconds parses a duration given in (possibly fractional) seconds, or with a
// Go unit suffix ("500ms").
func (v *Values) Seconds(name string) time.Duration {
	s := strings.TrimSpace(v.raw[name])
	if f, err := strconv.ParseFloat(s, 64); err == nil && f > 0 {
		return time.Duration(f * float64(time.Second))
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return d
	}
	v.fail(name, "want a positive number of seconds")
	return 0
}

// NetworkCIDR parses a CIDR that must be a network address (Neutron rejects
// 10.0.0.1/8 at start).
func (v *Values) NetworkCIDR(name string) netip.Prefix {
	p, err := netip.ParsePrefix(strings.TrimSpace(v.raw[name]))
	if err != nil || !p.Addr().Is4() {
		v.fail(name, "want an IPv4 CIDR")
		return netip.Prefix{}
	}
	if p.Masked() != p {
		v.fail(name, fmt.Sprintf("not a network address (did you mean %s?)", p.Masked()))
	}
	return p
}

// Range parses "MIN:MAX".
func (v *Values) Range(name string, lo, hi int) (int, int) {
	a, b, ok := strings.Cut(strings.TrimSpace(v.raw[name]), ":")
	x, err1 := strconv.Atoi(a)
	y, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || x < lo || y > hi || x > y {
		v.fail(name, fmt.Sprintf("want MIN:MAX within %d:%d", lo, hi))
	}
	return x, y
}
