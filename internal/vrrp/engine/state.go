package engine

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// SavedFile is the file, in <StateDir>/ha_confs/<router_id>/ beside the
// agent's state file, where the engine remembers a router for the next
// engine to adopt.
const SavedFile = "vrrp.json"

func savedPath(stateDir, id string) string {
	return filepath.Join(stateDir, "ha_confs", id, SavedFile)
}

// saveRouter writes r's file unless it already says the same.
func saveRouter(stateDir string, r Router) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	path := savedPath(stateDir, r.ID)
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, b) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".vrrp-*")
	if err != nil {
		return err
	}
	_, werr := tmp.Write(b)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return nil
}

// forgetRouter removes r's file, and its directory if that is then empty.
func forgetRouter(stateDir, id string) error {
	path := savedPath(stateDir, id)
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	_ = os.Remove(filepath.Dir(path)) // fails when not empty: fine
	return nil
}

// loadRouters reads every saved router. Unreadable files are reported and
// skipped.
func loadRouters(stateDir string) ([]Router, error) {
	dir := filepath.Join(stateDir, "ha_confs")
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Router
	var errs []error
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		b, err := os.ReadFile(savedPath(stateDir, e.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var r Router
		if err := json.Unmarshal(b, &r); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", savedPath(stateDir, e.Name()), err))
			continue
		}
		if r.ID != e.Name() {
			errs = append(errs, fmt.Errorf("%s: router id %q", savedPath(stateDir, e.Name()), r.ID))
			continue
		}
		if err := r.validate(); err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, r)
	}
	return out, errors.Join(errs...)
}
