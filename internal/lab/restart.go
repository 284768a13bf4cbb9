package lab

import (
	"context"
	"fmt"
	"time"
)

// agentExitTimeout bounds the wait for a signalled agent to exit before it
// is started again.
const agentExitTimeout = 30 * time.Second

// restartAgent waits until node's recorded agent has exited (it was told to:
// SIGUSR2, SIGTERM or SIGKILL), starts it again with the same command line,
// namespace and log, and records the new process in lab.json.
func restartAgent(ctx context.Context, st *State, node string) (Process, error) {
	return restartProcess(ctx, st, "agent-"+node)
}

// restartProcess waits until the lab's process name (e.g. "server",
// "agent-net1") has exited and starts it again with the same arguments and
// log, recording the new one in the lab's state.
func restartProcess(ctx context.Context, st *State, name string) (Process, error) {
	p, ok := st.process(name)
	if !ok {
		return Process{}, fmt.Errorf("no %s recorded", name)
	}
	if err := waitFor(ctx, agentExitTimeout, name+" (pid "+fmt.Sprint(p.PID)+") to exit", func() (bool, error) {
		return !p.running(), nil
	}); err != nil {
		return Process{}, err
	}
	np, _, err := startDaemon(p.Name, p.Node, p.Namespace, p.Argv, p.Log)
	if err != nil {
		return Process{}, err
	}
	st.setProcess(np)
	if err := st.Save(); err != nil {
		return np, err
	}
	return np, nil
}
