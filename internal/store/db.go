// Package store is l3ha's persistent state: one SQL schema, embedded
// migrations, and typed access to networks, subnets, ports, routers, floating
// IPs, agents, router bindings and HA allocations on SQLite or PostgreSQL.
//
// Every change runs in a write transaction that first bumps a global revision
// number. On PostgreSQL that row lock serializes writers; on SQLite the single
// writer connection does. Unique constraints (VRID per HA network, binding
// index per router, IP per subnet, one HA network per project and sequence)
// back this up, and transactions are retried on serialization failures, so
// allocation never depends on luck. Committed revisions are broadcast to
// waiters in this process and, on PostgreSQL, to every server through
// LISTEN/NOTIFY.
package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Dialect is the SQL flavour of a database.
type Dialect int

const (
	SQLite Dialect = iota
	Postgres
)

const notifyChannel = "l3ha_revision"

// DB is an open l3ha database.
type DB struct {
	dialect Dialect
	writer  *sql.DB // SQLite: one connection, BEGIN IMMEDIATE; PostgreSQL: the pool
	reader  *sql.DB
	dsn     string
	log     *slog.Logger

	mu       sync.Mutex
	revision int64
	changed  chan struct{} // closed and replaced when revision grows
	// changeLog holds what recent local writes changed (changes.go);
	// pending are revisions being committed here, which the listener
	// leaves to the writer (true once it was notified of one).
	changeLog map[int64]*Changes
	pending   map[int64]bool
	// Routers and masters per agent, kept between writes (changes.go).
	routerCounts, masters agentCounts
	// Kept between transactions (changes.go): ports per network, agents;
	// the last revisions that changed a network's ports (netRev: not
	// applied to the kept entry; joinRev: applied) or anything (unknownRev).
	netCache    map[string]*NetworkPorts
	agentsCache []*Agent
	netRev      map[string]int64
	joinRev     map[string]int64
	unknownRev  int64

	stopListen context.CancelFunc
	listenDone chan struct{}
}

// Open connects to url ("sqlite:///abs/path.db", "sqlite://:memory:" is not
// supported; "postgres://…"), applies migrations and, on PostgreSQL, starts
// listening for other servers' changes.
func Open(ctx context.Context, dbURL string, log *slog.Logger) (*DB, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	db := &DB{log: log, changed: make(chan struct{})}
	switch {
	case strings.HasPrefix(dbURL, "sqlite://"):
		path := strings.TrimPrefix(dbURL, "sqlite://")
		if path == "" || !filepath.IsAbs(path) {
			return nil, fmt.Errorf("database %q: sqlite needs an absolute path (sqlite:///abs/path.db)", dbURL)
		}
		db.dialect = SQLite
		common := "_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)"
		w, err := sql.Open("sqlite", "file:"+path+"?"+common+"&_txlock=immediate")
		if err != nil {
			return nil, fmt.Errorf("opening sqlite %s: %w", path, err)
		}
		w.SetMaxOpenConns(1)
		r, err := sql.Open("sqlite", "file:"+path+"?"+common)
		if err != nil {
			w.Close()
			return nil, fmt.Errorf("opening sqlite %s: %w", path, err)
		}
		r.SetMaxOpenConns(4)
		db.writer, db.reader = w, r
	case strings.HasPrefix(dbURL, "postgres://"), strings.HasPrefix(dbURL, "postgresql://"):
		db.dialect = Postgres
		p, err := sql.Open("pgx", dbURL)
		if err != nil {
			return nil, fmt.Errorf("opening postgres: %w", err)
		}
		p.SetMaxOpenConns(16)
		p.SetMaxIdleConns(16)
		db.writer, db.reader, db.dsn = p, p, dbURL
	default:
		u, _ := url.Parse(dbURL)
		scheme := ""
		if u != nil {
			scheme = u.Scheme
		}
		return nil, fmt.Errorf("database %q: unsupported scheme %q (want sqlite:// or postgres://)", dbURL, scheme)
	}
	if err := db.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	if err := db.reader.QueryRowContext(ctx, "SELECT revision FROM meta WHERE id = 1").Scan(&db.revision); err != nil {
		db.Close()
		return nil, fmt.Errorf("reading revision: %w", err)
	}
	if db.dialect == Postgres {
		lctx, cancel := context.WithCancel(context.Background())
		db.stopListen, db.listenDone = cancel, make(chan struct{})
		ready := make(chan error, 1)
		go db.listen(lctx, ready)
		select {
		case err := <-ready:
			if err != nil {
				db.Close()
				return nil, err
			}
		case <-ctx.Done():
			db.Close()
			return nil, ctx.Err()
		}
	}
	return db, nil
}

// Dialect reports which database this is.
func (db *DB) Dialect() Dialect { return db.dialect }

// Close stops the listener and closes connections.
func (db *DB) Close() error {
	if db.stopListen != nil {
		db.stopListen()
		<-db.listenDone
	}
	var errs []error
	if db.writer != nil {
		errs = append(errs, db.writer.Close())
	}
	if db.reader != nil && db.reader != db.writer {
		errs = append(errs, db.reader.Close())
	}
	return errors.Join(errs...)
}

func (db *DB) migrate(ctx context.Context) error {
	err := db.retry(ctx, func() error {
		tx, err := db.writer.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		if db.dialect == Postgres {
			// CREATE TABLE IF NOT EXISTS is not safe against a concurrent
			// CREATE (duplicate pg_type row) when several servers start at once.
			if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock(7301)"); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)`); err != nil {
			return err
		}
		return tx.Commit()
	})
	if err != nil {
		return fmt.Errorf("creating schema_migrations: %w", err)
	}
	entries, err := migrations.ReadDir("migrations")
	if err != nil {
		return err
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	for _, name := range names {
		version, err := strconv.Atoi(strings.SplitN(name, "_", 2)[0])
		if err != nil {
			return fmt.Errorf("migration %s: name must start with a number", name)
		}
		body, err := migrations.ReadFile("migrations/" + name)
		if err != nil {
			return err
		}
		err = db.retry(ctx, func() error {
			tx, err := db.writer.BeginTx(ctx, nil)
			if err != nil {
				return err
			}
			defer tx.Rollback()
			if db.dialect == Postgres {
				// Several servers may start at once on one database.
				if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock(7301)"); err != nil {
					return err
				}
			}
			var n int
			if err := tx.QueryRowContext(ctx, db.rebind("SELECT COUNT(*) FROM schema_migrations WHERE version = ?"), version).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				return nil
			}
			for _, stmt := range splitSQL(string(body)) {
				if _, err := tx.ExecContext(ctx, stmt); err != nil {
					return fmt.Errorf("%w (statement: %.80s)", err, stmt)
				}
			}
			if _, err := tx.ExecContext(ctx, db.rebind("INSERT INTO schema_migrations (version) VALUES (?)"), version); err != nil {
				return err
			}
			return tx.Commit()
		})
		if err != nil {
			return fmt.Errorf("applying migration %s: %w", name, err)
		}
	}
	return nil
}

// splitSQL splits a migration file into statements (no semicolons inside
// literals in our migrations) and drops comment lines.
func splitSQL(s string) []string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "--") {
			continue
		}
		lines = append(lines, l)
	}
	var out []string
	for _, stmt := range strings.Split(strings.Join(lines, "\n"), ";") {
		if strings.TrimSpace(stmt) != "" {
			out = append(out, stmt)
		}
	}
	return out
}

// rebind turns ? placeholders into $N for PostgreSQL.
func (db *DB) rebind(q string) string {
	if db.dialect != Postgres {
		return q
	}
	var b strings.Builder
	n := 0
	for i := 0; i < len(q); i++ {
		if q[i] == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteByte(q[i])
	}
	return b.String()
}

// Tx is a transaction handed to Read/Write callbacks.
type Tx struct {
	db  *DB
	tx  *sql.Tx
	ctx context.Context
	// Revision is the revision this write transaction commits as (0 in reads
	// and quiet writes).
	Revision int64
	// Now is the transaction's clock, shared by every row it stamps.
	Now time.Time
	// minRev is the revision known before the transaction began: it sees
	// every change up to it.
	minRev int64

	ch                         *Changes // what this write changed (bumping writes only)
	routerCounts, masterCounts txCounts // its bindings added and removed per agent
	deltaUnknown               bool     // bindings changed uncounted
}

func (t *Tx) exec(q string, args ...any) (sql.Result, error) {
	return t.tx.ExecContext(t.ctx, t.db.rebind(q), args...)
}

func (t *Tx) query(q string, args ...any) (*sql.Rows, error) {
	return t.tx.QueryContext(t.ctx, t.db.rebind(q), args...)
}

func (t *Tx) queryRow(q string, args ...any) *sql.Row {
	return t.tx.QueryRowContext(t.ctx, t.db.rebind(q), args...)
}

// Read runs fn in a read-only transaction.
func (db *DB) Read(ctx context.Context, fn func(*Tx) error) error {
	return db.retry(ctx, func() error {
		minRev := db.Revision()
		tx, err := db.reader.BeginTx(ctx, &sql.TxOptions{ReadOnly: db.dialect == Postgres})
		if err != nil {
			return fmt.Errorf("beginning read: %w", err)
		}
		defer tx.Rollback()
		if err := fn(&Tx{db: db, tx: tx, ctx: ctx, Now: time.Now().UTC(), minRev: minRev}); err != nil {
			return err
		}
		return tx.Commit()
	})
}

// Write runs fn in a transaction that changes desired state: it takes the
// global write lock, bumps the revision, and wakes every waiter (in every
// server) after commit. fn may run more than once on retryable conflicts, so
// it must not have effects outside tx.
func (db *DB) Write(ctx context.Context, fn func(*Tx) error) (int64, error) {
	return db.write(ctx, true, fn)
}

// WriteQuiet runs fn in a write transaction that does not change any agent's
// desired state (heartbeats, ha_state reports): no revision bump, no wakeups.
func (db *DB) WriteQuiet(ctx context.Context, fn func(*Tx) error) error {
	_, err := db.write(ctx, false, fn)
	return err
}

// LockWrites serializes a quiet write with every Write, as if it were one
// but without bumping the revision, so that neither misses rows the other
// commits meanwhile (on PostgreSQL it locks the revision row; SQLite's single
// writer connection already serializes).
func (t *Tx) LockWrites() error {
	if t.db.dialect != Postgres {
		return nil
	}
	var rev int64
	if err := t.queryRow("SELECT revision FROM meta WHERE id = 1 FOR UPDATE").Scan(&rev); err != nil {
		return fmt.Errorf("locking writes: %w", err)
	}
	return nil
}

func (db *DB) write(ctx context.Context, bump bool, fn func(*Tx) error) (int64, error) {
	var rev int64
	err := db.retry(ctx, func() error {
		minRev := db.Revision()
		tx, err := db.writer.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("beginning write: %w", err)
		}
		defer tx.Rollback()
		t := &Tx{db: db, tx: tx, ctx: ctx, Now: time.Now().UTC(), minRev: minRev}
		if bump {
			if err := t.queryRow("UPDATE meta SET revision = revision + 1 WHERE id = 1 RETURNING revision").Scan(&t.Revision); err != nil {
				return fmt.Errorf("bumping revision: %w", err)
			}
		}
		if err := fn(t); err != nil {
			return err
		}
		if bump && db.dialect == Postgres {
			if _, err := t.exec("SELECT pg_notify(?, ?)", notifyChannel, strconv.FormatInt(t.Revision, 10)); err != nil {
				return fmt.Errorf("notifying: %w", err)
			}
			db.setPending(t.Revision)
		}
		if err := tx.Commit(); err != nil {
			if bump && db.dialect == Postgres {
				db.dropPending(t.Revision)
			}
			return err
		}
		rev = t.Revision
		if bump {
			db.committed(rev, t)
		}
		return nil
	})
	return rev, err
}

// setPending tells the listener that rev is being committed here, so that
// its notification does not advance the revision before the writer logged
// what rev changed.
func (db *DB) setPending(rev int64) {
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.pending == nil {
		db.pending = map[int64]bool{}
	}
	db.pending[rev] = false
}

// dropPending forgets a revision whose commit failed; one the listener
// heard of meanwhile (another server committed it) is advanced to now.
func (db *DB) dropPending(rev int64) {
	db.mu.Lock()
	seen := db.pending[rev]
	delete(db.pending, rev)
	db.mu.Unlock()
	if seen {
		db.advance(rev)
	}
}

// committed logs what t changed as rev and advances the revision.
func (db *DB) committed(rev int64, t *Tx) {
	db.mu.Lock()
	delete(db.pending, rev)
	if rev > db.revision+1 {
		// Revisions before rev not heard of yet: another server's (or a
		// concurrent local write's, logged when it returns).
		db.forgetKept(rev - 1)
	}
	db.logChanges(rev, t.ch)
	db.routerCounts.keep(rev, &t.routerCounts, t.deltaUnknown)
	db.masters.keep(rev, &t.masterCounts, t.deltaUnknown)
	db.keepNetworks(rev, t.ch)
	if rev > db.revision {
		db.revision = rev
		close(db.changed)
		db.changed = make(chan struct{})
	}
	db.mu.Unlock()
}

// retry reruns fn on serialization failures, deadlocks and lock timeouts.
func (db *DB) retry(ctx context.Context, fn func() error) error {
	const attempts = 8
	var err error
	for i := 0; i < attempts; i++ {
		err = fn()
		if err == nil || !isRetryable(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(1+rand.IntN(5<<i)) * time.Millisecond):
		}
	}
	return err
}

func isRetryable(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "40001" || pe.Code == "40P01" || pe.Code == "55P03"
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		c := se.Code() & 0xff
		return c == sqlite3.SQLITE_BUSY || c == sqlite3.SQLITE_LOCKED
	}
	return false
}

// IsUniqueViolation reports whether err is a unique-constraint conflict.
func IsUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "23505"
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	return false
}

// Revision is the newest committed revision this process knows of.
func (db *DB) Revision() int64 {
	db.mu.Lock()
	defer db.mu.Unlock()
	return db.revision
}

// WaitRevision blocks until the revision exceeds after, or ctx ends; it
// returns the revision it saw.
func (db *DB) WaitRevision(ctx context.Context, after int64) (int64, error) {
	for {
		db.mu.Lock()
		rev, ch := db.revision, db.changed
		db.mu.Unlock()
		if rev > after {
			return rev, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return rev, ctx.Err()
		}
	}
}

func (db *DB) advance(rev int64) {
	db.mu.Lock()
	defer db.mu.Unlock()
	if _, ok := db.pending[rev]; ok {
		// Committed here: the writer advances once it logged its changes.
		db.pending[rev] = true
		rev--
	}
	if rev > db.revision {
		// Committed by another server: what it changed is unknown.
		db.forgetKept(rev)
		db.revision = rev
		close(db.changed)
		db.changed = make(chan struct{})
	}
}

// listen follows other servers' commits through LISTEN/NOTIFY, reconnecting
// with backoff; after each (re)connect it reads the revision so nothing
// committed while disconnected is missed.
func (db *DB) listen(ctx context.Context, ready chan<- error) {
	defer close(db.listenDone)
	first := true
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := db.listenOnce(ctx, func() {
			if first {
				first = false
				ready <- nil
			}
			backoff = 100 * time.Millisecond
		})
		if ctx.Err() != nil {
			return
		}
		if first {
			ready <- fmt.Errorf("listening for changes: %w", err)
			return
		}
		db.log.Warn("lost change notifications from PostgreSQL, reconnecting", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (db *DB) listenOnce(ctx context.Context, connected func()) error {
	conn, err := pgx.Connect(ctx, db.dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		return err
	}
	var rev int64
	if err := conn.QueryRow(ctx, "SELECT revision FROM meta WHERE id = 1").Scan(&rev); err != nil {
		return err
	}
	db.advance(rev)
	connected()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if r, err := strconv.ParseInt(n.Payload, 10, 64); err == nil {
			db.advance(r)
		}
	}
}

// Dump returns every row of every l3ha table as text, ordered, so tests can
// prove that a rejected request changed nothing.
func (db *DB) Dump(ctx context.Context) (map[string][]string, error) {
	tables := []string{"meta", "networks", "ha_networks", "subnets", "ports", "ip_allocations", "routers", "ha_vrids", "agents", "router_bindings", "floatingips", "ha_transitions", "ha_switchovers"}
	out := map[string][]string{}
	for _, t := range tables {
		rows, err := db.reader.QueryContext(ctx, "SELECT * FROM "+t)
		if err != nil {
			return nil, fmt.Errorf("dumping %s: %w", t, err)
		}
		cols, _ := rows.Columns()
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				rows.Close()
				return nil, err
			}
			var b strings.Builder
			for i, v := range vals {
				if t == "agents" && cols[i] == "heartbeat_at" {
					continue // heartbeats move on their own
				}
				if t == "router_bindings" && (cols[i] == "ha_state_at" || cols[i] == "ha_state_fresh_until") {
					continue // so do the agents' periodic ha_state re-assertions
				}
				fmt.Fprintf(&b, "%s=%v;", cols[i], v)
			}
			out[t] = append(out[t], b.String())
		}
		rows.Close()
		sort.Strings(out[t])
	}
	return out, nil
}
