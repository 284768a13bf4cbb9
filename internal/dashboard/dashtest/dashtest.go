// Package dashtest drives l3ha's web dashboard (internal/dashboard) in a
// real headless chromium, for tests: it opens the page (signing in with a
// token when the server asks for one), reads what the page shows for each
// router, agent and transition, clicks a router's switchover button and
// reads the outcome the page shows, and saves screenshots.
//
// It reads the page's DOM — the rows and the data-* attributes the page
// renders from state.json, and the text it shows — never state.json
// itself, so that what a test checks is what an operator would see.
//
// Only tests import it (it pulls in chromedp); the l3ha binary does not.
package dashtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// ChromiumEnv names a variable that may give the browser's path; without
// it Chromium looks for Debian's chromium on PATH.
const ChromiumEnv = "L3HA_CHROMIUM"

// Chromium returns the path of the browser to run: $L3HA_CHROMIUM, or
// chromium (Debian's package) or chromium-browser on PATH.
func Chromium() (string, error) {
	if p := os.Getenv(ChromiumEnv); p != "" {
		return exec.LookPath(p)
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("chromium not found (apt-get install chromium, or set " + ChromiumEnv + ")")
}

// Require returns the browser's path, or skips t when there is none — fails
// it under L3HA_TEST_REQUIRE_ALL=1 (make test), where every tool must be
// installed.
func Require(t testing.TB) string {
	t.Helper()
	p, err := Chromium()
	if err != nil {
		if os.Getenv("L3HA_TEST_REQUIRE_ALL") == "1" {
			t.Fatalf("%v (L3HA_TEST_REQUIRE_ALL=1)", err)
		}
		t.Skip(err.Error())
	}
	return p
}

// Options adjust Open.
type Options struct {
	// Chromium is the browser's path ("": Chromium()).
	Chromium string
	// Token is the X-Auth-Token the page signs in with when the server
	// asks for one (through the page's token form, as a person would);
	// "" when the server runs noauth.
	Token string
	// IgnoreCertificateErrors accepts any TLS certificate, for a server
	// whose CA the browser does not know (the lab's).
	IgnoreCertificateErrors bool
	// Netns runs chromium in this network namespace (ip netns exec), to
	// reach a server that only that namespace reaches: the lab's, whose
	// networks the root namespace has no route to.
	Netns string
	// Width and Height are the window's size (0: 1280×1000).
	Width, Height int
	// Logf hears the page's console messages and exceptions (nil: none),
	// e.g. t.Logf.
	Logf func(format string, args ...any)
}

// Browser is a chromium showing the dashboard. Its methods must not be
// called concurrently (they drive one tab).
type Browser struct {
	url     string
	dir     string // chromium's user-data-dir, removed by Close
	ctx     context.Context
	cancel  context.CancelFunc // the tab's and the browser's context
	release context.CancelFunc // the allocator's
	logf    func(string, ...any)
}

// Open starts a headless chromium (no sandbox, so that it runs as root;
// a fresh profile in a temporary directory) and loads dashboardURL (the
// server's /dashboard/), signing in with o.Token if the page asks for one.
// It returns once the page shows data, or fails with what the page shows
// instead (such as "This token is not an admin's"). ctx bounds the
// opening, not the browser's life: Close ends that.
func Open(ctx context.Context, dashboardURL string, o Options) (*Browser, error) {
	path := o.Chromium
	if path == "" {
		var err error
		if path, err = Chromium(); err != nil {
			return nil, err
		}
	}
	dir, err := os.MkdirTemp("", "l3ha-dashtest-")
	if err != nil {
		return nil, fmt.Errorf("dashtest: chromium's profile directory: %w", err)
	}
	w, h := o.Width, o.Height
	if w == 0 || h == 0 {
		w, h = 1280, 1000
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path), chromedp.UserDataDir(dir), chromedp.NoSandbox, chromedp.Headless,
		chromedp.DisableGPU, chromedp.WindowSize(w, h))
	if o.IgnoreCertificateErrors {
		opts = append(opts, chromedp.IgnoreCertErrors)
	}
	if o.Netns != "" {
		ip, err := exec.LookPath("ip")
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("dashtest: running chromium in namespace %s: %w", o.Netns, err)
		}
		opts = append(opts, chromedp.ModifyCmdFunc(func(cmd *exec.Cmd) {
			// ip execs chromium in place: the process chromedp waits for
			// and kills is chromium itself.
			cmd.Args = append([]string{"ip", "netns", "exec", o.Netns, cmd.Path}, cmd.Args[1:]...)
			cmd.Path = ip
			if cmd.SysProcAttr == nil {
				cmd.SysProcAttr = &syscall.SysProcAttr{}
			}
			// What chromedp does without ModifyCmdFunc: chromium dies
			// with the test.
			cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
		}))
	}
	// The browser outlives ctx (which may be a short deadline for the
	// opening): its life is the Browser's, until Close.
	actx, release := chromedp.NewExecAllocator(context.WithoutCancel(ctx), opts...)
	bctx, cancel := chromedp.NewContext(actx)
	b := &Browser{url: dashboardURL, dir: dir, ctx: bctx, cancel: cancel, release: release, logf: o.Logf}
	// The first action starts the browser, for as long as the context it
	// runs on lives: b.ctx itself, not one bounded by ctx. ctx still
	// bounds the wait: Close stops a browser that takes too long.
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(bctx, chromedp.Navigate("about:blank")) }()
	select {
	case err = <-started:
	case <-ctx.Done():
		b.Close()
		<-started
		err = ctx.Err()
	}
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("dashtest: starting %s: %w", path, err)
	}
	if b.logf != nil {
		go b.forwardConsole()
	}
	if err := b.run(ctx, chromedp.Navigate(dashboardURL)); err != nil {
		b.Close()
		return nil, fmt.Errorf("dashtest: loading %s: %w", dashboardURL, err)
	}
	state, err := b.waitState(ctx)
	if err == nil && state == "login" {
		if o.Token == "" {
			err = errors.New("the page asks for a token and Options.Token is empty")
		} else {
			err = b.Login(ctx, o.Token)
		}
	}
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("dashtest: opening %s: %w", dashboardURL, err)
	}
	return b, nil
}

// forwardConsole passes the page's console to logf until the browser ends.
func (b *Browser) forwardConsole() {
	for m, err := range chromedp.Console(b.ctx) {
		if err != nil {
			return
		}
		b.logf("dashboard page console: %s", m)
	}
}

// UserDataDir is chromium's profile directory (gone after Close).
func (b *Browser) UserDataDir() string { return b.dir }

// URL is the dashboard's URL the browser opened.
func (b *Browser) URL() string { return b.url }

// Close closes the browser, kills any of its processes still running and
// removes its profile directory.
func (b *Browser) Close() error {
	if b.cancel == nil {
		return nil
	}
	// Gracefully first (Browser.close), bounded; then the allocator
	// kills what is left of the main process and waits for it.
	cctx, stop := context.WithTimeout(b.ctx, 5*time.Second)
	_ = chromedp.Cancel(cctx)
	stop()
	b.cancel()
	b.release()
	b.cancel = nil
	// Chromium's helpers (zygote, network service) may outlive the main
	// process for a moment; they are this browser's when their command
	// line names its unique profile directory.
	killed := killLeftovers(b.dir)
	var err error
	for i := 0; i < 50; i++ {
		if err = os.RemoveAll(b.dir); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond) // a leftover was still writing in it
	}
	if err != nil {
		return fmt.Errorf("dashtest: removing chromium's profile %s (killed %d leftovers): %w", b.dir, killed, err)
	}
	return nil
}

// killLeftovers kills, by PID, the processes whose command line has
// --user-data-dir=dir, until none is left (at most 2 s); it returns how
// many it killed.
func killLeftovers(dir string) int {
	flag := "--user-data-dir=" + dir
	killed := 0
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		pids := processesWith(flag)
		if len(pids) == 0 {
			return killed
		}
		for _, pid := range pids {
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				killed++
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return killed
}

func processesWith(arg string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		for a := range strings.SplitSeq(string(cmdline), "\x00") {
			if a == arg {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}

// run runs actions on the tab, bounded by ctx as well as by the browser's
// life.
func (b *Browser) run(ctx context.Context, actions ...chromedp.Action[chromedp.Void]) error {
	if b.cancel == nil {
		return errClosed
	}
	rctx, cancel := context.WithCancel(b.ctx)
	defer cancel()
	defer context.AfterFunc(ctx, cancel)()
	return chromedp.Do(rctx, actions...)
}

// eval evaluates a JavaScript expression in the page into T, bounded by
// ctx.
func eval[T any](ctx context.Context, b *Browser, expr string) (T, error) {
	var zero T
	if b.cancel == nil {
		return zero, errClosed
	}
	rctx, cancel := context.WithCancel(b.ctx)
	defer cancel()
	defer context.AfterFunc(ctx, cancel)()
	v, err := chromedp.Run(rctx, chromedp.Evaluate[T](expr))
	if err != nil && ctx.Err() != nil {
		return zero, fmt.Errorf("%w (%w)", ctx.Err(), err)
	}
	return v, err
}

// pollInterval is how often the wait functions look at the page: often
// enough that a test's deadline measures the page, not the polling.
const pollInterval = 25 * time.Millisecond

// WaitFor calls check every 25 ms until it says done, fails, or ctx ends.
func WaitFor(ctx context.Context, check func() (bool, error)) error {
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		ok, err := check()
		if err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// waitState waits until the page has either data (ready) or a token form
// (login) and says which.
func (b *Browser) waitState(ctx context.Context) (string, error) {
	var state string
	err := WaitFor(ctx, func() (bool, error) {
		var err error
		state, err = b.State(ctx)
		return state == "ready" || state == "login", err
	})
	if err != nil {
		return state, fmt.Errorf("waiting for the page to load (state %q): %w", state, err)
	}
	return state, nil
}

// State is the page's state: loading, login (it wants a token) or ready
// (it shows data).
func (b *Browser) State(ctx context.Context) (string, error) {
	return eval[string](ctx, b, `document.body ? (document.body.dataset.state || '') : ''`)
}

// Login types token into the page's token form and submits it; it returns
// once the page shows data, or fails with the message the form shows (a
// refused or non-admin token).
func (b *Browser) Login(ctx context.Context, token string) error {
	if err := b.run(ctx, chromedp.WaitVisible(chromedp.ID("token")), chromedp.SendKeys(chromedp.ID("token"), token),
		chromedp.Click(chromedp.ID("login-submit"))); err != nil {
		return fmt.Errorf("dashtest: filling the token form: %w", err)
	}
	// Submitting sets the state to loading at once; the answer sets it to
	// ready, or back to login with a message.
	var state string
	err := WaitFor(ctx, func() (bool, error) {
		var err error
		state, err = b.State(ctx)
		return state == "ready" || state == "login", err
	})
	if err != nil {
		return fmt.Errorf("dashtest: signing in: %w", err)
	}
	if state == "login" {
		msg, _ := b.LoginError(ctx)
		return fmt.Errorf("dashtest: the page refused the token: %q", msg)
	}
	return nil
}

// LoginError is the message the token form shows ("" none).
func (b *Browser) LoginError(ctx context.Context) (string, error) {
	return eval[string](ctx, b, `(() => { const e = document.getElementById('login-error'); return e && !e.hidden ? e.innerText.trim() : ''; })()`)
}

// Error is the page's error banner ("" none): the server unreachable, or a
// NeutronError of state.json.
func (b *Browser) Error(ctx context.Context) (string, error) {
	return eval[string](ctx, b, `(() => { const e = document.getElementById('error'); return e && !e.hidden ? e.innerText.trim() : ''; })()`)
}

// Screenshot saves a PNG of the whole page to path.
func (b *Browser) Screenshot(ctx context.Context, path string) error {
	if b.cancel == nil {
		return errClosed
	}
	rctx, cancel := context.WithCancel(b.ctx)
	defer cancel()
	defer context.AfterFunc(ctx, cancel)()
	png, err := chromedp.Run(rctx, chromedp.FullScreenshot(100)) // 100: PNG
	if err != nil {
		return fmt.Errorf("dashtest: screenshot: %w", err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		return fmt.Errorf("dashtest: screenshot: %w", err)
	}
	return nil
}
