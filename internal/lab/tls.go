package lab

import (
	"net"
	"path/filepath"
	"time"

	"github.com/l3ha/l3ha/internal/tlsconf"
)

// The lab's server speaks https with a certificate of the lab's own CA:
// agents, the lab's API client and the openstack CLI (clouds.yaml's
// cacert) trust that CA alone.
func tlsDir(dir string) string   { return filepath.Join(dir, "tls") }
func caPath(dir string) string   { return filepath.Join(tlsDir(dir), "ca.pem") }
func certPath(dir string) string { return filepath.Join(tlsDir(dir), "server.pem") }
func keyPath(dir string) string  { return filepath.Join(tlsDir(dir), "server.key") }

// CAPath is the lab's CA certificate, the --ca-cert of the l3ha CLI and the
// --server-ca of agents talking to the lab's server.
func CAPath(dir string) string { return filepath.Join(tlsDir(dir), "ca.pem") }

// labCertValidity outlives any lab.
const labCertValidity = 5 * 365 * 24 * time.Hour

// writeLabTLS makes the lab's CA and the server's certificate for
// ControllerIP.
func writeLabTLS(dir string) error {
	ca, err := tlsconf.NewCA("l3ha lab CA", labCertValidity)
	if err != nil {
		return err
	}
	if err := ca.IssueServer(certPath(dir), keyPath(dir), 0, labCertValidity, []net.IP{net.ParseIP(ControllerIP)}); err != nil {
		return err
	}
	return tlsconf.WriteFile(caPath(dir), ca.PEM)
}
