package neutronlocal

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Paths of the Debian packages mariadb-server and python3-neutron.
const (
	mariadbd         = "/usr/sbin/mariadbd"
	mariadbInstallDB = "/usr/bin/mariadb-install-db"
	mariadbClient    = "/usr/bin/mariadb"
	neutronPython    = "/usr/lib/python3/dist-packages/neutron"
	neutronMigration = neutronPython + "/db/migration/alembic_migrations/versions"
)

// DatabaseName is the database Neutron uses in the private MariaDB.
const DatabaseName = "neutron"

// innodbOptions are shared by mariadb-install-db and every mariadbd run: the
// redo log size is fixed in the data directory, so a copied template must be
// started with the same one.
var innodbOptions = []string{"--innodb-log-file-size=16M"}

// schemaFormat changes whenever the way a template is made changes, so that
// old templates are not reused.
const schemaFormat = "neutronlocal-mariadb-1"

// mariadbArgs is the command line of a private mariadbd: as root (its files
// are in the caller's scratch directory), a unix socket only, no grant
// tables (whoever can reach the socket, in a 0700 directory, is trusted), no
// durability (a scratch database).
func mariadbArgs(datadir, socket, pidFile, errLog string) []string {
	args := []string{
		mariadbd, "--no-defaults",
		"--user=root",
		"--datadir=" + datadir,
		"--socket=" + socket,
		"--pid-file=" + pidFile,
		"--log-error=" + errLog,
		"--skip-networking",
		"--skip-grant-tables",
		"--skip-name-resolve",
		"--skip-log-bin",
		"--innodb-buffer-pool-size=64M",
		"--innodb-flush-log-at-trx-commit=0",
		"--innodb-doublewrite=0",
		"--max-connections=500",
		"--character-set-server=utf8mb4",
		"--collation-server=utf8mb4_general_ci",
	}
	return append(args, innodbOptions...)
}

// startDatabase makes n.dir/mysql hold a MariaDB data directory with
// Neutron's schema and starts mariadbd on it. The schema comes from the
// template in the user's cache directory when there is one; otherwise a
// fresh data directory is migrated with `neutron-db-manage upgrade heads`
// and then saved as the template (mariadbd is stopped for the copy and
// started again).
func (n *Neutron) startDatabase(ctx context.Context, noCache bool) error {
	t := time.Now()
	datadir := n.paths.datadir
	template := ""
	if !noCache {
		var err error
		if template, err = schemaTemplatePath(); err != nil {
			n.log.Warn("no neutron schema template", "err", err)
			template = ""
		}
	}
	if template != "" {
		switch err := copyTree(template, datadir); {
		case err == nil:
			if err := n.runMariadb(ctx); err != nil {
				if ctx.Err() == nil && os.RemoveAll(template) == nil {
					err = fmt.Errorf("%w\n(the data directory came from schema template %s, now removed)", err, template)
				}
				return err
			}
			n.log.Debug("database copied from the schema template", "template", template, "elapsed", time.Since(t).Round(time.Millisecond))
			return nil
		case errors.Is(err, fs.ErrNotExist):
			os.RemoveAll(datadir)
		default:
			os.RemoveAll(datadir)
			n.log.Warn("copying the neutron schema template; migrating", "template", template, "err", err)
		}
	}

	if err := run(ctx, childEnv(n.Dir), n.paths.logFile("mariadb-install-db.log"), append([]string{
		mariadbInstallDB, "--no-defaults", "--user=root", "--datadir=" + datadir,
		"--auth-root-authentication-method=socket", "--skip-test-db", "--skip-name-resolve",
	}, innodbOptions...)...); err != nil {
		return fmt.Errorf("neutronlocal: %w", err)
	}
	if err := n.runMariadb(ctx); err != nil {
		return err
	}
	if err := run(ctx, childEnv(n.Dir), n.paths.logFile("mariadb-client.log"),
		mariadbClient, "--no-defaults", "--socket="+n.paths.socket, "-uroot",
		"-e", "CREATE DATABASE "+DatabaseName+" CHARACTER SET utf8"); err != nil {
		return fmt.Errorf("neutronlocal: creating the database: %w", err)
	}
	tm := time.Now()
	if err := run(ctx, childEnv(n.Dir), n.paths.logFile("neutron-db-manage.log"), append(append([]string{neutronDBManage}, n.serverArgs()...), "upgrade", "heads")...); err != nil {
		return fmt.Errorf("neutronlocal: %w", err)
	}
	n.log.Debug("neutron-db-manage upgrade heads done", "elapsed", time.Since(tm).Round(time.Millisecond))
	if template == "" {
		return nil
	}
	// A consistent copy needs a clean shutdown.
	if err := n.db.stop(termGrace); err != nil {
		return fmt.Errorf("neutronlocal: stopping mariadbd to save the schema template: %w", err)
	}
	if err := saveTemplate(datadir, template); err != nil {
		n.log.Warn("saving the neutron schema template", "template", template, "err", err)
	} else {
		n.log.Debug("neutron schema template saved", "template", template)
	}
	return n.runMariadb(ctx)
}

// runMariadb starts mariadbd on n.paths.datadir and waits until it greets
// on its socket.
func (n *Neutron) runMariadb(ctx context.Context) error {
	os.Remove(n.paths.socket)
	p, err := startProc("mariadbd",
		mariadbArgs(n.paths.datadir, n.paths.socket, filepath.Join(n.paths.run, "mariadbd.pid"), n.paths.logFile("mariadb.log")),
		childEnv(n.Dir), n.Dir, n.paths.logFile("mariadbd.out"), n.paths.logFile("mariadb.log"))
	if err != nil {
		return fmt.Errorf("neutronlocal: %w", err)
	}
	n.db = p
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if last = mariadbGreets(n.paths.socket); last == nil {
			n.log.Debug("mariadbd ready", "pid", p.pid, "socket", n.paths.socket)
			return nil
		}
		select {
		case <-ctx.Done():
			p.kill()
			return fmt.Errorf("neutronlocal: waiting for mariadbd on %s (last error: %v): %w%s", n.paths.socket, last, ctx.Err(), p.logTails())
		case <-p.done:
			return fmt.Errorf("neutronlocal: mariadbd exited before it answered (%v)%s", p.waitErr, p.logTails())
		case <-tick.C:
		}
	}
}

// mariadbGreets connects to the socket and reads the server's handshake
// packet (protocol version 10): mariadbd is ready for clients.
func mariadbGreets(socket string) error {
	c, err := net.DialTimeout("unix", socket, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	var hdr [5]byte // 3-byte length, sequence number, protocol version
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return fmt.Errorf("reading the handshake: %w", err)
	}
	if hdr[4] != 10 {
		return fmt.Errorf("handshake: protocol version %d, not 10 (an error packet?)", hdr[4])
	}
	return nil
}

// The schema is made once per installed Neutron and MariaDB: the first Start
// runs `neutron-db-manage upgrade heads` (10-30 s) and keeps the data
// directory of the migrated, still empty database in the user's cache
// directory; later Starts copy it (a fraction of a second). The copy is named
// after a hash of the neutron package's version, its migration scripts and
// mariadbd, so an upgrade makes a new one.

// schemaTemplatePath is the path of the schema template (a directory) for
// the installed Neutron and MariaDB.
func schemaTemplatePath() (string, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n", schemaFormat, strings.Join(innodbOptions, " "))
	infos, err := filepath.Glob(neutronPython + "-*-info")
	if err != nil {
		return "", err
	}
	if len(infos) == 0 {
		return "", fmt.Errorf("no %s-*-info: unknown neutron version", neutronPython)
	}
	for _, info := range infos { // neutron-21.0.0.egg-info
		fmt.Fprintf(h, "%s\n", filepath.Base(info))
	}
	fi, err := os.Stat(mariadbd)
	if err != nil {
		return "", err
	}
	fmt.Fprintf(h, "%s %d %d\n", mariadbd, fi.Size(), fi.ModTime().UnixNano())
	err = filepath.WalkDir(neutronMigration, func(path string, d fs.DirEntry, err error) error {
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
		return "", fmt.Errorf("hashing neutron's migrations: %w", err)
	}
	return filepath.Join(cache, "l3ha", "neutron-mariadb-"+hex.EncodeToString(h.Sum(nil))[:16]), nil
}

// saveTemplate copies datadir to template through a temporary directory and
// a rename, so that concurrent Starts never see a partial template (of two
// that race, the first rename wins).
func saveTemplate(datadir, template string) error {
	if err := os.MkdirAll(filepath.Dir(template), 0o700); err != nil {
		return err
	}
	suffix := make([]byte, 6)
	if _, err := rand.Read(suffix); err != nil {
		return err
	}
	tmp := template + ".tmp-" + hex.EncodeToString(suffix)
	defer os.RemoveAll(tmp) // after a successful rename: nothing to remove
	if err := copyTree(datadir, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, template); err != nil {
		if _, serr := os.Stat(template); serr == nil {
			return nil // another Start saved one meanwhile
		}
		return err
	}
	return nil
}

// copyTree copies the directory src to dst (which must not exist):
// directories and regular files, with their permission bits. A missing src
// is fs.ErrNotExist.
func copyTree(src, dst string) error {
	if _, err := os.Stat(src); err != nil {
		return err
	}
	if _, err := os.Lstat(dst); err == nil {
		return fmt.Errorf("%s already exists", dst)
	}
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.Mkdir(target, fi.Mode().Perm()|0o700)
		case d.Type().IsRegular():
			return copyFile(path, target, fi.Mode().Perm())
		default:
			return nil // sockets, pid files' symlinks: not part of a template
		}
	})
}

func copyFile(src, dst string, perm os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}
