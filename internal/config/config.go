// Package config resolves l3ha options from three sources, in order of
// precedence: command-line flags, environment variables L3HA_<OPTION>, and
// an INI config file using Neutron's option names. Options are declared once
// with their Neutron name and, for options of a named section such as
// [keystone_authtoken], that section; the flag is the qualified name with
// dashes (--keystone-authtoken-auth-url). As with oslo.config, options the
// file holds that l3ha does not read are ignored — Values.Unknown lists them
// so that the caller can log them — so an operator's neutron.conf can be
// given as it is.
package config

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"gopkg.in/ini.v1"
)

// Option is one declared option.
type Option struct {
	Name string // Neutron-style name with underscores, e.g. agent_down_time
	// Section is the INI section the option lives in (e.g.
	// keystone_authtoken); empty for l3ha's own options, which a file may
	// set in any section.
	Section string
	// Aliases are other "section.name" keys of a file that set the option,
	// e.g. database.connection for database.
	Aliases []string
	Default string
	Usage   string
	// Flag is the option's flag name when it differs from FlagName(Key()),
	// e.g. "host" for [DEFAULT] host.
	Flag string
}

// flag is the option's flag name.
func (o Option) flag() string {
	if o.Flag != "" {
		return o.Flag
	}
	return FlagName(o.Key())
}

// Key is how Values names the option: Name, or Section.Name.
func (o Option) Key() string {
	if o.Section == "" {
		return o.Name
	}
	return o.Section + "." + o.Name
}

// Set is a group of options bound to a flag set.
type Set struct {
	opts   []Option
	flags  *pflag.FlagSet
	values map[string]*string
	files  *[]string
	dirs   *[]string
	env    func(string) (string, bool)
}

// New declares opts on flags, plus --config-file and --config-dir.
func New(flags *pflag.FlagSet, opts []Option) *Set {
	s := &Set{opts: opts, flags: flags, values: map[string]*string{}, env: os.LookupEnv}
	s.files = flags.StringArray("config-file", nil, "INI file with options by their Neutron names, e.g. neutron.conf; repeatable, later files win (flags and L3HA_* environment variables win over files)")
	s.dirs = flags.StringArray("config-dir", nil, "directory whose *.conf files are read, in name order, after the --config-file files (oslo.config's --config-dir); repeatable")
	for _, o := range opts {
		s.values[o.Key()] = flags.String(o.flag(), o.Default, o.Usage+" (env "+EnvName(o.Key())+")")
	}
	return s
}

// configPaths are the files to read: --config-file's, then each
// --config-dir's *.conf in name order.
func (s *Set) configPaths() ([]string, error) {
	paths := slices.Clone(*s.files)
	if !s.flags.Changed("config-file") {
		if v, ok := s.env("L3HA_CONFIG_FILE"); ok {
			paths = []string{v}
		}
	}
	for _, dir := range *s.dirs {
		matches, err := filepath.Glob(filepath.Join(dir, "*.conf"))
		if err != nil {
			return nil, fmt.Errorf("reading config dir %s: %w", dir, err)
		}
		if _, err := os.Stat(dir); err != nil {
			return nil, fmt.Errorf("reading config dir: %w", err)
		}
		sort.Strings(matches)
		paths = append(paths, matches...)
	}
	return paths, nil
}

// FlagName is the flag spelling of an option key.
func FlagName(key string) string { return strings.NewReplacer("_", "-", ".", "-").Replace(key) }

// EnvName is the environment variable of an option key.
func EnvName(key string) string {
	return "L3HA_" + strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(key))
}

// Values is the resolved option set.
type Values struct {
	raw     map[string]string
	errs    []string
	source  map[string]string
	unknown []string
}

// Resolve applies precedence flag > environment > file > default.
func (s *Set) Resolve() (*Values, error) {
	paths, err := s.configPaths()
	if err != nil {
		return nil, err
	}
	// file maps "section.name" (section lower-cased, DEFAULT included) to
	// its value; anySection maps a bare name to its value in whatever
	// section set it, for l3ha's own section-less options.
	file, anySection := map[string]string{}, map[string]string{}
	for _, path := range paths {
		// oslo.config has no inline comments: a '#' belongs to the value
		// (passwords may hold one); nor backslash continuations: a value
		// ending in a backslash keeps it and does not swallow the next line.
		f, err := ini.LoadSources(ini.LoadOptions{IgnoreInlineComment: true, IgnoreContinuation: true}, path)
		if err != nil {
			return nil, fmt.Errorf("reading config file %s: %w", path, err)
		}
		for _, sec := range f.Sections() {
			for _, k := range sec.Keys() {
				file[strings.ToLower(sec.Name())+"."+k.Name()] = k.Value()
				anySection[k.Name()] = k.Value()
			}
		}
	}
	used := map[string]bool{}
	v := &Values{raw: map[string]string{}, source: map[string]string{}}
	for _, o := range s.opts {
		key := o.Key()
		fromFile, inFile := "", false
		if o.Section == "" {
			fromFile, inFile = anySection[o.Name], anySection[o.Name] != ""
			for k := range file {
				if strings.HasSuffix(k, "."+o.Name) {
					used[k] = true
				}
			}
		} else if val, ok := file[key]; ok && val != "" {
			fromFile, inFile, used[key] = val, true, true
		}
		for _, alias := range o.Aliases {
			if val, ok := file[alias]; ok && val != "" && !inFile {
				fromFile, inFile = val, true
			}
			used[alias] = true
		}
		switch env, ok := s.env(EnvName(key)); {
		case s.flags.Changed(o.flag()):
			v.raw[key], v.source[key] = *s.values[key], "flag"
		case ok:
			v.raw[key], v.source[key] = env, "environment"
		case inFile:
			v.raw[key], v.source[key] = fromFile, "config file"
		default:
			v.raw[key], v.source[key] = o.Default, "default"
		}
	}
	for k := range file {
		if !used[k] {
			v.unknown = append(v.unknown, k)
		}
	}
	sort.Strings(v.unknown)
	return v, nil
}

// Unknown lists the "section.name" keys of the config file that no option
// reads; oslo.config ignores those too, but a misspelt name should show up
// in the log.
func (v *Values) Unknown() []string { return v.unknown }

// Set reports whether an option was given (flag, environment or file)
// rather than left at its default.
func (v *Values) Set(key string) bool { return v.source[key] != "default" }

// rank orders the sources by precedence.
var rank = map[string]int{"default": 0, "config file": 1, "environment": 2, "flag": 3}

// Outranks reports whether key was given by a source of at least the
// precedence of other's (flag > environment > config file > default): for
// an option that sets a part of another, such as bind_host of bind, whether
// the part should win.
func (v *Values) Outranks(key, other string) bool {
	return rank[v.source[key]] >= rank[v.source[other]]
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
