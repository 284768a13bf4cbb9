package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// AgentCredentials tells which host an agent token acts for. Every agent
// endpoint request is authenticated by it, and a request about another host
// than the token's is refused (403): a leaked token lets its holder speak
// for one host, not for the cloud.
type AgentCredentials interface {
	// HostFor returns the host token was issued to, or false for a token
	// that is not known.
	HostFor(token string) (host string, ok bool)
}

// minAgentTokenLen is the shortest agent token accepted: tokens are
// secrets, not names.
const minAgentTokenLen = 16

// agentTokenReloadEvery is how often the tokens file is checked for a
// change: a rotated credential takes effect within it, with no restart.
const agentTokenReloadEvery = time.Second

// AgentTokensFile holds the agent credentials of a file of lines
// "HOST TOKEN" ('#' starts a comment). A host may have several tokens, so
// that a credential can be rotated without a gap: add the new one, give it
// to the agent, remove the old one. The file is read again when it changes;
// a file that no longer parses keeps the last good credentials in force and
// is logged.
type AgentTokensFile struct {
	path string
	log  *slog.Logger

	mu        sync.Mutex
	byToken   map[[sha256.Size]byte]string // sha256 of a token → host
	stamp     fileStamp
	checkedAt time.Time
}

type fileStamp struct {
	mod  time.Time
	size int64
}

// LoadAgentTokensFile reads the agent tokens file at path.
func LoadAgentTokensFile(path string, log *slog.Logger) (*AgentTokensFile, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := &AgentTokensFile{path: path, log: log}
	st, byToken, err := readAgentTokens(path)
	if err != nil {
		return nil, err
	}
	f.stamp, f.byToken, f.checkedAt = st, byToken, time.Now()
	return f, nil
}

// HostFor implements AgentCredentials.
func (f *AgentTokensFile) HostFor(token string) (string, bool) {
	// Looking up the token's digest leaks nothing of the token through
	// timing: a near miss hashes as far from it as any other string.
	sum := sha256.Sum256([]byte(token))
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reloadLocked()
	host, ok := f.byToken[sum]
	return host, ok
}

// reloadLocked reads the file again when it changed since the last look,
// at most once per agentTokenReloadEvery.
func (f *AgentTokensFile) reloadLocked() {
	now := time.Now()
	if now.Sub(f.checkedAt) < agentTokenReloadEvery {
		return
	}
	f.checkedAt = now
	fi, err := os.Stat(f.path)
	if err != nil {
		f.log.Error("agent tokens file unreadable; the last credentials read stay in force", "path", f.path, "err", err)
		return
	}
	if (fileStamp{fi.ModTime(), fi.Size()}) == f.stamp {
		return
	}
	st, byToken, err := readAgentTokens(f.path)
	if err != nil {
		f.log.Error("agent tokens file changed but does not parse; the last credentials read stay in force", "path", f.path, "err", err)
		f.stamp = fileStamp{fi.ModTime(), fi.Size()} // logged once per change
		return
	}
	hosts := map[string]bool{}
	for _, h := range byToken {
		hosts[h] = true
	}
	f.stamp, f.byToken = st, byToken
	f.log.Info("agent tokens reloaded", "path", f.path, "hosts", len(hosts), "tokens", len(byToken))
}

func readAgentTokens(path string) (fileStamp, map[[sha256.Size]byte]string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, nil, fmt.Errorf("reading agent tokens file: %w", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fileStamp{}, nil, fmt.Errorf("reading agent tokens file: %w", err)
	}
	byToken, err := parseAgentTokens(b)
	if err != nil {
		return fileStamp{}, nil, fmt.Errorf("agent tokens file %s: %w", path, err)
	}
	return fileStamp{fi.ModTime(), fi.Size()}, byToken, nil
}

// parseAgentTokens parses lines "HOST TOKEN". Errors name the line but
// never show a token.
func parseAgentTokens(b []byte) (map[[sha256.Size]byte]string, error) {
	byToken := map[[sha256.Size]byte]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(line)
		switch {
		case len(fields) == 0:
			continue
		case len(fields) != 2:
			return nil, fmt.Errorf("line %d: want HOST TOKEN", n)
		case len(fields[0]) > 255:
			return nil, fmt.Errorf("line %d: host name longer than 255 characters", n)
		case len(fields[1]) < minAgentTokenLen:
			return nil, fmt.Errorf("line %d: the token of host %s is shorter than %d characters", n, fields[0], minAgentTokenLen)
		}
		sum := sha256.Sum256([]byte(fields[1]))
		if other, dup := byToken[sum]; dup && other != fields[0] {
			return nil, fmt.Errorf("line %d: host %s has the token of host %s: every host needs its own", n, fields[0], other)
		}
		byToken[sum] = fields[0]
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(byToken) == 0 {
		return nil, fmt.Errorf("no HOST TOKEN lines: no agent could connect")
	}
	return byToken, nil
}

type agentHostKey struct{}

// withAgentHost records in ctx the host an agent request was authenticated
// as.
func withAgentHost(ctx context.Context, host string) context.Context {
	return context.WithValue(ctx, agentHostKey{}, host)
}

// actFor refuses a request about host made with another host's credential.
func actFor(r *http.Request, host string) error {
	authed, _ := r.Context().Value(agentHostKey{}).(string)
	if host != authed {
		return endpointError{http.StatusForbidden, "HTTPForbidden", fmt.Sprintf("the agent credential of host %s may not act for host %s", authed, host)}
	}
	return nil
}
