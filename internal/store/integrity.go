package store

import (
	"context"
	"fmt"
	"strings"
)

// CheckIntegrity asks the database whether its files and references are
// sound: on SQLite PRAGMA integrity_check (pages, indexes) and
// foreign_key_check (every reference resolves). PostgreSQL checks both at
// every write, so there is nothing to ask it. For tests of crashes and
// restarts, and for operators after one.
func (db *DB) CheckIntegrity(ctx context.Context) error {
	if db.dialect == Postgres {
		return nil
	}
	rows, err := db.reader.QueryContext(ctx, "PRAGMA integrity_check")
	if err != nil {
		return fmt.Errorf("integrity check: %w", err)
	}
	var problems []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			rows.Close()
			return fmt.Errorf("integrity check: %w", err)
		}
		if s != "ok" {
			problems = append(problems, s)
		}
	}
	rows.Close()
	fk, err := db.reader.QueryContext(ctx, "PRAGMA foreign_key_check")
	if err != nil {
		return fmt.Errorf("foreign key check: %w", err)
	}
	defer fk.Close()
	for fk.Next() {
		var table, parent string
		var rowid, fkid any
		if err := fk.Scan(&table, &rowid, &parent, &fkid); err != nil {
			return fmt.Errorf("foreign key check: %w", err)
		}
		problems = append(problems, fmt.Sprintf("%s row %v references a missing %s", table, rowid, parent))
	}
	if err := fk.Err(); err != nil {
		return fmt.Errorf("foreign key check: %w", err)
	}
	if len(problems) > 0 {
		return fmt.Errorf("database integrity: %s", strings.Join(problems, "; "))
	}
	return nil
}
