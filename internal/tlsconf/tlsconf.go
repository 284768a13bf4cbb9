// Package tlsconf builds the TLS settings l3ha's clients (agents, the CLI)
// use to reach an l3ha server over https: the system's roots, or only the
// CAs an operator names.
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
)

// Transport returns a copy of http.DefaultTransport that trusts the
// certificates of caFile (PEM, one or more CAs) instead of the system's
// roots; an empty caFile keeps the system's roots.
func Transport(caFile string) (*http.Transport, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if caFile == "" {
		return tr, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("reading CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate", caFile)
	}
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	return tr, nil
}
