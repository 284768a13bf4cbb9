package api

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"strings"
)

// Identity is who a request acts as.
type Identity struct {
	ProjectID string
	Admin     bool
}

// Authenticator turns a request into an Identity; a 401 *Error rejects it.
type Authenticator interface {
	Identify(r *http.Request) (Identity, error)
}

// NoAuth takes identity from headers, for labs and tests: X-Project-Id (or
// the legacy X-Tenant-Id) and X-Roles (comma separated, "admin" in any case
// makes an admin). A request with neither header is an admin acting in
// project DefaultProject.
type NoAuth struct{ DefaultProject string }

// Identify implements Authenticator.
func (n NoAuth) Identify(r *http.Request) (Identity, error) {
	project := r.Header.Get("X-Project-Id")
	if project == "" {
		project = r.Header.Get("X-Tenant-Id")
	}
	roles := r.Header.Get("X-Roles")
	if project == "" && roles == "" {
		return Identity{ProjectID: n.DefaultProject, Admin: true}, nil
	}
	return Identity{ProjectID: project, Admin: hasAdmin(roles)}, nil
}

func hasAdmin(roles string) bool {
	for _, role := range strings.Split(roles, ",") {
		if strings.EqualFold(strings.TrimSpace(role), "admin") {
			return true
		}
	}
	return false
}

// TokenAuth maps static X-Auth-Token values to identities.
type TokenAuth struct{ tokens map[string]Identity }

// LoadTokenFile reads lines "TOKEN PROJECT_ID ROLE[,ROLE]"; blank lines and
// lines starting with # are ignored.
func LoadTokenFile(path string) (*TokenAuth, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading token file: %w", err)
	}
	defer f.Close()
	t := &TokenAuth{tokens: map[string]Identity{}}
	sc := bufio.NewScanner(f)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		fields := strings.Fields(text)
		if len(fields) != 3 {
			return nil, fmt.Errorf("token file %s line %d: want TOKEN PROJECT_ID ROLE[,ROLE]", path, line)
		}
		t.tokens[fields[0]] = Identity{ProjectID: fields[1], Admin: hasAdmin(fields[2])}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading token file: %w", err)
	}
	if len(t.tokens) == 0 {
		return nil, fmt.Errorf("token file %s has no tokens", path)
	}
	return t, nil
}

// Identify implements Authenticator.
func (t *TokenAuth) Identify(r *http.Request) (Identity, error) {
	id, ok := t.tokens[r.Header.Get("X-Auth-Token")]
	if !ok {
		return Identity{}, errf(http.StatusUnauthorized, "HTTPUnauthorized", "Authentication required")
	}
	return id, nil
}
