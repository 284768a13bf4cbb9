package lab

// The comparison (`l3ha lab bench compare`): driver configurations, and
// failover and converge runs over them into results.json.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// BenchConfig is one HA driver configuration of a comparison.
type BenchConfig struct {
	Driver    string `json:"driver"`
	AdvertInt string `json:"advert_int"`
	// RoutersPerNetwork overrides the comparison's
	// l3_ha_routers_per_network when not 0.
	RoutersPerNetwork int `json:"ha_routers_per_network,omitempty"`
}

// ParseBenchConfigs reads "native:0.1,keepalived:2,keepalived:2:254":
// DRIVER:ADVERT_SECONDS[:HA_ROUTERS_PER_NETWORK].
func ParseBenchConfigs(s string) ([]BenchConfig, error) {
	var out []BenchConfig
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		f := strings.Split(item, ":")
		if len(f) < 2 || len(f) > 3 || (f[0] != "native" && f[0] != "keepalived") {
			return nil, fmt.Errorf("driver configuration %q: want native|keepalived:ADVERT_SECONDS[:HA_ROUTERS_PER_NETWORK]", item)
		}
		if v, err := strconv.ParseFloat(f[1], 64); err != nil || v <= 0 {
			return nil, fmt.Errorf("driver configuration %q: advert interval %q is not a positive number", item, f[1])
		}
		c := BenchConfig{Driver: f[0], AdvertInt: f[1]}
		if len(f) == 3 {
			n, err := strconv.Atoi(f[2])
			if err != nil || n < 1 || n > 254 {
				return nil, fmt.Errorf("driver configuration %q: routers per HA network %q: want 1 to 254", item, f[2])
			}
			c.RoutersPerNetwork = n
		}
		out = append(out, c)
	}
	return out, nil
}

// options returns base with c's driver settings.
func (c BenchConfig) options(base Options) Options {
	base.HADriver, base.AdvertInt = c.Driver, c.AdvertInt
	if c.RoutersPerNetwork > 0 {
		base.HARoutersPerNetwork = c.RoutersPerNetwork
	}
	return base
}

// String is "native 0.1s" (and the routers per HA network when set).
func (c BenchConfig) String() string {
	s := c.Driver + " " + c.AdvertInt + "s"
	if c.RoutersPerNetwork > 0 {
		s += fmt.Sprintf(" (%d routers per HA network)", c.RoutersPerNetwork)
	}
	return s
}

// BenchCompareOptions configure BenchCompare.
type BenchCompareOptions struct {
	// Options are the lab's (Name, Dir, Binary, Out); each run brings the
	// lab up and down again.
	Options
	Routers []int
	Configs []BenchConfig
	// Fault of the failover runs (default node).
	Fault     string
	ProbeRate int
	// ConvergeRouters (0: none) is N of the converge runs, one per
	// ConvergeConfigs.
	ConvergeRouters int
	ConvergeConfigs []BenchConfig
	// OutDir receives results.json (rewritten after every run) and
	// failover.svg.
	OutDir string
	// ProfileDir, if set, receives CPU profiles of the largest runs.
	ProfileDir string
	// Command is recorded in results.json.
	Command string
}

// BenchResults is bench/results.json.
type BenchResults struct {
	Machine   Machine               `json:"machine"`
	Command   string                `json:"command,omitempty"`
	ProbeRate int                   `json:"probe_rate"`
	Failover  []BenchFailoverResult `json:"failover"`
	Converge  []BenchConvergeResult `json:"converge"`
	DurationS float64               `json:"duration_s"`
}

// BenchCompare runs BenchFailover for every configuration and number of
// routers (smallest first) and BenchConverge for the converge
// configurations, writing OutDir/results.json after every run and
// OutDir/failover.svg at the end. A failed run is recorded with its error
// and the comparison goes on; the errors are returned joined.
func BenchCompare(ctx context.Context, o BenchCompareOptions) (*BenchResults, error) {
	if o.OutDir == "" {
		o.OutDir = "bench"
	}
	if o.ProbeRate == 0 {
		o.ProbeRate = DefaultBenchProbeRate
	}
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return nil, err
	}
	began := time.Now()
	res := &BenchResults{Machine: ThisMachine(), Command: o.Command, ProbeRate: o.ProbeRate,
		Failover: []BenchFailoverResult{}, Converge: []BenchConvergeResult{}}
	res.Machine.KeepalivedVersion = keepalivedVersion()
	routers := append([]int{}, o.Routers...)
	sort.Ints(routers)
	largest := 0
	if len(routers) > 0 {
		largest = routers[len(routers)-1]
	}
	var errs []error
	save := func() {
		res.DurationS = seconds(time.Since(began))
		if err := writeJSONFile(filepath.Join(o.OutDir, "results.json"), res); err != nil {
			errs = append(errs, err)
		}
	}
	for _, n := range routers {
		for _, c := range o.Configs {
			if ctx.Err() != nil {
				break
			}
			fo := BenchFailoverOptions{Options: c.options(o.Options), Routers: n, Fault: o.Fault, ProbeRate: o.ProbeRate}
			if o.ProfileDir != "" && n == largest {
				fo.ProfileDir = o.ProfileDir
			}
			o.sayf("== failover: %d routers, %s", n, c)
			r, err := BenchFailover(ctx, fo)
			if r == nil {
				r = &BenchFailoverResult{Routers: n, Driver: c.Driver, Fault: fo.Fault}
			}
			if err != nil {
				r.Error = err.Error()
				errs = append(errs, caseError(o.sayf, fmt.Errorf("failover %d routers %s: %w", n, c, err)))
			}
			res.Failover = append(res.Failover, *r)
			save()
		}
	}
	if o.ConvergeRouters > 0 {
		for _, c := range o.ConvergeConfigs {
			if ctx.Err() != nil {
				break
			}
			co := BenchConvergeOptions{Options: c.options(o.Options), Routers: o.ConvergeRouters, ProfileDir: o.ProfileDir}
			o.sayf("== converge: %d routers, %s", o.ConvergeRouters, c)
			r, err := BenchConverge(ctx, co)
			if r == nil {
				r = &BenchConvergeResult{Routers: o.ConvergeRouters, Driver: c.Driver}
			}
			if err != nil {
				r.Error = err.Error()
				errs = append(errs, caseError(o.sayf, fmt.Errorf("converge %d routers %s: %w", o.ConvergeRouters, c, err)))
			}
			res.Converge = append(res.Converge, *r)
			save()
		}
	}
	save()
	if len(res.Failover) > 0 {
		f, err := os.Create(filepath.Join(o.OutDir, "failover.svg"))
		if err == nil {
			err = errors.Join(WriteFailoverSVG(f, res.Failover, res.Machine.Summary()), f.Close())
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	if err := ctx.Err(); err != nil {
		errs = append(errs, err)
	}
	return res, errors.Join(errs...)
}

// caseError is what a failed case of the comparison makes the whole run
// return: nothing when the system under test did not settle (Neutron's
// layout with hundreds of keepalived processes on one HA network did not,
// at 500 routers) — that is a result, recorded in results.json and the tables — and
// err for anything else (the lab itself failing).
func caseError(sayf func(string, ...any), err error) error {
	if errors.Is(err, ErrNotSettled) {
		sayf("%v: recorded as this case's result", err)
		return nil
	}
	return err
}
