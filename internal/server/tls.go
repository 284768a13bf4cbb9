package server

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// certReloader serves the certificate of a PEM cert/key pair and loads it
// again when either file changes, so that a renewed certificate is served
// without a restart. A pair that no longer loads keeps the last good one in
// service and is logged.
type certReloader struct {
	certFile, keyFile string
	log               *slog.Logger

	mu        sync.Mutex
	cert      *tls.Certificate
	stamp     [2]fileStamp
	checkedAt time.Time
}

func newCertReloader(certFile, keyFile string, log *slog.Logger) (*certReloader, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &certReloader{certFile: certFile, keyFile: keyFile, log: log}
	stamp, err := c.stat()
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("loading tls_cert %s and tls_key %s: %w", certFile, keyFile, err)
	}
	c.cert, c.stamp, c.checkedAt = &cert, stamp, time.Now()
	return c, nil
}

func (c *certReloader) stat() ([2]fileStamp, error) {
	var st [2]fileStamp
	for i, f := range []string{c.certFile, c.keyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			return st, fmt.Errorf("reading TLS files: %w", err)
		}
		st[i] = fileStamp{fi.ModTime(), fi.Size()}
	}
	return st, nil
}

// getCertificate is tls.Config.GetCertificate.
func (c *certReloader) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := time.Now(); now.Sub(c.checkedAt) >= time.Second {
		c.checkedAt = now
		if st, err := c.stat(); err != nil {
			c.log.Error("TLS certificate unreadable; the last one loaded stays in service", "err", err)
		} else if st != c.stamp {
			c.stamp = st
			if cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile); err != nil {
				c.log.Error("TLS certificate changed but does not load; the last one loaded stays in service", "cert", c.certFile, "err", err)
			} else {
				c.cert = &cert
				c.log.Info("TLS certificate reloaded", "cert", c.certFile)
			}
		}
	}
	return c.cert, nil
}

func (c *certReloader) tlsConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: c.getCertificate}
}
