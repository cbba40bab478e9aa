package harness

import "os/exec"

// Binary is the piped binary Main built.
func Binary() string { return binary }

// Command returns a command that runs the piped binary with args in the
// environment node n was started with (broker, internal address, …): for
// subcommands such as `piped healthcheck` that read the node's
// configuration. The node's flags (--port, --nodeId, --config) are not
// added; the caller runs the command.
func (n *Node) Command(args ...string) *exec.Cmd {
	cmd := exec.Command(binary, args...)
	cmd.Env = n.cmd.Env
	return cmd
}
