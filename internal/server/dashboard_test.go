package server_test

import (
	"net/http"
	"testing"

	"github.com/l3ha/l3ha/internal/servertest"
)

// TestDashboardBenchPlotOption: dashboard_bench_plot comes from a config
// file ([l3ha]) or a flag, the flag winning, and is empty by default; the
// server mounts the dashboard at /dashboard/.
func TestDashboardBenchPlotOption(t *testing.T) {
	dir := t.TempDir()
	base := "[l3ha]\nagent_tokens_file = @TOKENS@\n[database]\nconnection = sqlite:///" + dir + "/l3ha.db\n"
	for _, tc := range []struct {
		name, conf string
		args       []string
		want       string
	}{
		{"default", base, nil, ""},
		{"config file", base + "[l3ha]\ndashboard_bench_plot = /srv/bench/failover.svg\n", nil, "/srv/bench/failover.svg"},
		{"flag wins", base + "[l3ha]\ndashboard_bench_plot = /srv/bench/failover.svg\n", []string{"--dashboard-bench-plot", "/tmp/other.svg"}, "/tmp/other.svg"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := loadServerConfig(t, tc.conf, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.DashboardBenchPlot != tc.want {
				t.Errorf("DashboardBenchPlot %q, want %q", cfg.DashboardBenchPlot, tc.want)
			}
		})
	}
}

// TestDashboardIsMounted: the server serves the dashboard's page and its
// snapshot beside the API.
func TestDashboardIsMounted(t *testing.T) {
	srv := servertest.Start(t, servertest.Options{})
	for _, path := range []string{"/dashboard/", "/dashboard/state.json"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %d", path, resp.StatusCode)
		}
	}
}
