package local

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// Where Debian's python3-keystone is.
const (
	keystonePython = "/usr/lib/python3/dist-packages/keystone"
	keystoneSQL    = keystonePython + "/common/sql"
)

// The database schema is made once per installed Keystone: the first Start
// runs `keystone-manage db_sync` (some 3 s, mostly Python imports) and keeps
// a copy of the migrated, still empty database in the user's cache
// directory; later Starts copy it instead. The copy is named after a hash of
// the keystone package's version and its migration scripts, so an upgraded
// Keystone makes a new one.

// schemaTemplatePath is the path of the schema template for the installed
// Keystone.
func schemaTemplatePath() (string, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	h := sha256.New()
	infos, err := filepath.Glob(keystonePython + "-*-info")
	if err != nil {
		return "", err
	}
	if len(infos) == 0 {
		return "", fmt.Errorf("no %s-*-info: unknown keystone version", keystonePython)
	}
	for _, info := range infos { // keystone-22.0.2.egg-info
		fmt.Fprintf(h, "%s\n", filepath.Base(info))
	}
	err = filepath.WalkDir(keystoneSQL, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == "__pycache__" {
			return filepath.SkipDir
		}
		if !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s %d %d\n", path, fi.Size(), fi.ModTime().UnixNano())
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("hashing keystone's migrations: %w", err)
	}
	return filepath.Join(cache, "l3ha", "keystone-schema-"+hex.EncodeToString(h.Sum(nil))[:16]+".db"), nil
}

// restoreSchema copies the schema template to db; it reports false (and
// no error) when there is none yet.
func restoreSchema(template, db string) (bool, error) {
	src, err := os.Open(template)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer src.Close()
	dst, err := os.OpenFile(db, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return false, err
	}
	_, err = io.Copy(dst, src)
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(db)
		return false, err
	}
	return true, nil
}

// saveSchema writes a consistent copy of db (VACUUM INTO) to template,
// through a temporary file and a rename, so that concurrent Starts never
// see a partial template.
func saveSchema(ctx context.Context, db, template string) error {
	if err := os.MkdirAll(filepath.Dir(template), 0o700); err != nil {
		return err
	}
	suffix := make([]byte, 6)
	if _, err := rand.Read(suffix); err != nil {
		return err
	}
	tmp := template + ".tmp-" + hex.EncodeToString(suffix)
	defer os.Remove(tmp) // after a successful rename: nothing to remove
	conn, err := sql.Open("sqlite", "file:"+db+"?mode=ro&_pragma=busy_timeout(10000)")
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "VACUUM INTO ?", tmp); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, template)
}

// initDatabase puts the SQLite database at path (created if missing) in
// WAL mode, which the file keeps: keystone-manage and both uWSGI instances
// then read while another process writes, instead of failing with
// "database is locked".
func initDatabase(ctx context.Context, path string) error {
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)")
	if err != nil {
		return err
	}
	defer db.Close()
	var mode string
	if err := db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return err
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("journal_mode is %q, want wal", mode)
	}
	return db.Close()
}
