package neutronlocal

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// LockPath is the machine-wide lock a running Neutron holds (the namespace
// names are fixed). It holds the scratch directory and pid of its holder.
const LockPath = "/run/lock/l3ha-neutronlocal.lock"

// acquireLock takes LockPath, waiting until ctx ends if another Neutron
// holds it. A previous holder that did not stop cleanly (its record is still
// there) is cleaned up: its processes killed, every l3ha-nn-* namespace
// deleted.
func acquireLock(ctx context.Context, dir string, log *slog.Logger) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(LockPath), 0o755); err != nil {
		return nil, fmt.Errorf("neutronlocal: lock: %w", err)
	}
	f, err := os.OpenFile(LockPath, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("neutronlocal: lock: %w", err)
	}
	waiting := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("neutronlocal: lock %s: %w", LockPath, err)
		}
		if !waiting {
			waiting = true
			holder, _ := os.ReadFile(LockPath)
			log.Info("waiting for another neutronlocal to stop", "lock", LockPath, "holder", strings.TrimSpace(string(holder)))
		}
		select {
		case <-ctx.Done():
			holder, _ := os.ReadFile(LockPath)
			f.Close()
			return nil, fmt.Errorf("neutronlocal: another neutronlocal runs on this machine (lock %s: %s): %w", LockPath, strings.TrimSpace(string(holder)), ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
	prev, _ := os.ReadFile(LockPath)
	if prevDir, _, _ := strings.Cut(strings.TrimSpace(string(prev)), "\n"); prevDir != "" {
		log.Warn("cleaning up after a neutronlocal that did not stop", "previous_dir", prevDir)
		if err := killStrays(prevDir, 0); err != nil {
			log.Warn("killing its processes", "err", err)
		}
	}
	if err := deleteAllNamespaces(); err != nil {
		f.Close()
		return nil, fmt.Errorf("neutronlocal: deleting stale namespaces: %w", err)
	}
	if err := writeLock(f, dir+"\n"+strconv.Itoa(os.Getpid())+"\n"); err != nil {
		f.Close()
		return nil, fmt.Errorf("neutronlocal: lock: %w", err)
	}
	return f, nil
}

func writeLock(f *os.File, content string) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	_, err := f.WriteAt([]byte(content), 0)
	return err
}

// releaseLock empties the record (a clean stop) and unlocks.
func releaseLock(f *os.File) error {
	err := writeLock(f, "")
	return errors.Join(err, f.Close())
}

// Cleanup kills the processes a Neutron with scratch directory dir left
// behind (a crashed test) and, unless another Neutron is running now,
// deletes every l3ha-nn-* namespace. It leaves dir itself alone.
func Cleanup(dir string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	errs := []error{killStrays(dir, 0)}
	f, err := os.OpenFile(LockPath, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return errors.Join(errs...) // in use: its namespaces are not leftovers
	}
	errs = append(errs, deleteAllNamespaces())
	prev, _ := os.ReadFile(LockPath)
	if prevDir, _, _ := strings.Cut(strings.TrimSpace(string(prev)), "\n"); prevDir == dir {
		errs = append(errs, writeLock(f, ""))
	}
	return errors.Join(errs...)
}
