package local

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// config is one Keystone instance's keystone.conf and the files it names.
// The main instance and its issuers share Database, PolicyFile, PolicyDir
// and the key repositories; each has its own Dir, Conf and LogFile.
type config struct {
	Dir        string // holds Conf and LogFile
	Conf       string // keystone.conf
	LogFile    string // keystone.log
	Expiration int    // [token] expiration, seconds

	Database        string // SQLite file
	Cache           string // dogpile.cache.dbm file
	PolicyFile      string
	PolicyDir       string
	FernetTokens    string
	FernetReceipts  string
	CredentialsKeys string
}

func newConfig(dir string, expiration time.Duration) config {
	return config{
		Dir:             dir,
		Conf:            filepath.Join(dir, "keystone.conf"),
		LogFile:         filepath.Join(dir, "keystone.log"),
		Expiration:      seconds(expiration),
		Database:        filepath.Join(dir, "keystone.db"),
		Cache:           filepath.Join(dir, "cache.dbm"),
		PolicyFile:      filepath.Join(dir, "policy.yaml"),
		PolicyDir:       filepath.Join(dir, "policy.d"),
		FernetTokens:    filepath.Join(dir, "fernet-keys"),
		FernetReceipts:  filepath.Join(dir, "fernet-receipts"),
		CredentialsKeys: filepath.Join(dir, "credential-keys"),
	}
}

// issuer is c for an instance in dir with another token expiration.
func (c config) issuer(dir string, expiration time.Duration) config {
	c.Dir = dir
	c.Conf = filepath.Join(dir, "keystone.conf")
	c.LogFile = filepath.Join(dir, "keystone.log")
	c.Expiration = seconds(expiration)
	return c
}

// seconds rounds d up to whole seconds, as [token] expiration wants.
func seconds(d time.Duration) int {
	return int(math.Ceil(d.Seconds()))
}

// render is keystone.conf. Only what differs from Keystone's defaults, or
// must not depend on them, is set.
func (c config) render() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, `# Written by l3ha (internal/keystone/local): a private Keystone for tests and the lab.
[DEFAULT]
debug = false
log_file = %s
use_stderr = false
use_syslog = false

[cache]
# Without a cache Keystone runs hundreds of queries per request (a token
# validation took 0.8 s here). The dbm backend is one file that every
# process of both instances shares (flock-ed), so invalidations -- a
# revocation, a new role assignment -- are seen by all of them at once; the
# per-file dogpile lock is off (value creation nests, and a thread mutex
# serves).
enabled = true
backend = dogpile.cache.dbm
backend_argument = filename:%s
backend_argument = dogpile_lockfile:false

[catalog]
driver = sql

[credential]
key_repository = %s

[database]
# check_same_thread=false: Keystone leaks a connection now and then, which
# the garbage collector may finalise in another thread than the one that
# opened it; the rollback must not fail then and leave the lock held.
# timeout: SQLite's busy timeout in seconds (default 5). The file is in WAL
# mode (initDatabase), so that readers (an issuer, keystone-manage) and the
# writer do not block each other.
connection = sqlite:///%s?check_same_thread=false&timeout=10
# A scratch database: losing it on power failure does not matter, waiting
# for fsync on every write does.
sqlite_synchronous = false

[fernet_receipts]
key_repository = %s

[fernet_tokens]
key_repository = %s

[identity]
# bcrypt's minimum: creating users and issuing tokens by password stay fast.
password_hash_rounds = 4

[oslo_policy]
# Keystone's built-in default policy; nothing from /etc/keystone/policy.d.
policy_file = %s
policy_dirs = %s

[token]
provider = fernet
expiration = %d
`, c.LogFile, c.Cache, c.CredentialsKeys, c.Database, c.FernetReceipts, c.FernetTokens, c.PolicyFile, c.PolicyDir, c.Expiration)
	return b.Bytes()
}

func (c config) writeConf() error {
	return writeFileAtomic(c.Conf, c.render(), 0o600)
}

// writeFiles writes everything the main instance needs before
// keystone-manage runs: keystone.conf, an empty policy and the three key
// repositories.
func (c config) writeFiles() error {
	if err := os.MkdirAll(c.PolicyDir, 0o700); err != nil {
		return err
	}
	if err := writeFileAtomic(c.PolicyFile, []byte("# Keystone's default policy, unchanged.\n{}\n"), 0o600); err != nil {
		return err
	}
	for _, repo := range []string{c.FernetTokens, c.FernetReceipts, c.CredentialsKeys} {
		if err := writeKeyRepository(repo); err != nil {
			return fmt.Errorf("key repository %s: %w", repo, err)
		}
	}
	return c.writeConf()
}

// writeKeyRepository makes a Fernet key repository as `keystone-manage
// fernet_setup` (and credential_setup) would: key 0 staged, key 1 primary,
// each the URL-safe base64 of 32 random bytes, files 0600 in a 0700
// directory. Doing it here saves two keystone-manage runs of about 2 s of
// Python imports each.
func writeKeyRepository(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return err
	}
	for _, name := range []string{"0", "1"} {
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return err
		}
		if err := writeFileAtomic(filepath.Join(dir, name), []byte(base64.URLEncoding.EncodeToString(key)), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// checkPath rejects directory names that cannot be written into
// keystone.conf (oslo.config substitutes $), an SQLAlchemy URL (? # %) or
// OS_KEYSTONE_CONFIG_FILES (a ;-separated list).
func checkPath(p string) error {
	if i := strings.IndexAny(p, " \t\r\n;?#%$"); i >= 0 {
		return fmt.Errorf("%q: unsupported character %q", p, p[i])
	}
	return nil
}

// randomPassword is 32 URL-safe characters (192 random bits).
func randomPassword() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// writeFileAtomic writes data to path through a temporary file and a rename.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}
