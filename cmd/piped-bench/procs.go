package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/piped-dev/piped/internal/rabbitnode"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat.
// It is 100 on every Linux architecture Go supports except a few old ones;
// main replaces it with `getconf CLK_TCK` when that answers.
var clockTicks = 100.0

func detectClockTicks() {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err != nil {
		return
	}
	if v, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64); err == nil && v > 0 {
		clockTicks = v
	}
}

// parseStat returns utime+stime (clock ticks) from the contents of
// /proc/<pid>/stat. The command name (field 2) is in parentheses and may
// itself hold spaces and parentheses, so fields are counted from the last ')'.
func parseStat(b []byte) (uint64, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("stat: no ')'")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime is field 14 and stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("stat: %d fields after the name, want at least 13", len(f))
	}
	u, err := strconv.ParseUint(f[11], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stat: utime: %w", err)
	}
	s, err := strconv.ParseUint(f[12], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stat: stime: %w", err)
	}
	return u + s, nil
}

// cpuSeconds returns the CPU time process pid has used so far.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	t, err := parseStat(b)
	if err != nil {
		return 0, err
	}
	return float64(t) / clockTicks, nil
}

// parseVmRSS returns VmRSS in bytes from the contents of /proc/<pid>/status.
func parseVmRSS(b []byte) (float64, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			f := strings.Fields(v) // "1234 kB"
			if len(f) != 2 || f[1] != "kB" {
				return 0, fmt.Errorf("status: VmRSS %q", v)
			}
			kb, err := strconv.ParseFloat(f[0], 64)
			return kb * 1024, err
		}
	}
	return 0, errors.New("status: no VmRSS")
}

func vmRSS(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return parseVmRSS(b)
}

// parseProcStat returns the busy and total clock ticks of all CPUs from
// the first line of /proc/stat ("cpu  user nice system idle iowait irq
// softirq steal …"); idle and iowait are not busy.
func parseProcStat(b []byte) (busy, total uint64, err error) {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0, errors.New("/proc/stat: no cpu line")
	}
	for i, v := range f[1:] {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/stat: %w", err)
		}
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total, nil
}

// machineBusy returns the busy CPU seconds of the whole machine so far.
func machineBusy() (float64, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, false
	}
	busy, _, err := parseProcStat(b)
	return float64(busy) / clockTicks, err == nil
}

// cpuMeter samples the CPU time of named processes (node, broker, backend,
// harness) at the start and end of a measured window.
type cpuMeter map[string]int // role → pid

type cpuSample map[string]float64

// machineRole is the sample of the whole machine's busy CPU time.
const machineRole = "machine"

func (m cpuMeter) sample() cpuSample {
	s := cpuSample{}
	if v, ok := machineBusy(); ok {
		s[machineRole] = v
	}
	for role, pid := range m {
		if pid <= 0 {
			continue
		}
		if v, err := cpuSeconds(pid); err == nil {
			s[role] = v
		}
	}
	return s
}

// perOp returns the CPU microseconds each role spent per operation between
// samples a and b.
func perOp(a, b cpuSample, ops int64) map[string]float64 {
	out := map[string]float64{}
	if ops <= 0 {
		return out
	}
	for role, v := range b {
		if v0, ok := a[role]; ok && role != machineRole {
			out[role] = (v - v0) * 1e6 / float64(ops)
		}
	}
	return out
}

// otherCores returns how many cores, on average between a and b, were busy
// with processes other than the sampled ones (other work on the machine,
// which the figures of that window share it with).
func otherCores(a, b cpuSample, seconds float64) float64 {
	m0, ok0 := a[machineRole]
	m1, ok1 := b[machineRole]
	if !ok0 || !ok1 || seconds <= 0 {
		return 0
	}
	other := m1 - m0
	for role, v := range b {
		if v0, ok := a[role]; ok && role != machineRole {
			other -= v - v0
		}
	}
	return max(other, 0) / seconds
}

// brokerPID finds the beam.smp process that listens on the AMQP port:
// several broker nodes may run on one host. It falls back to the only (or
// first) beam.smp when the socket owner cannot be read.
func brokerPID(port int) int {
	inodes := listeningInodes(port)
	first := 0
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile(filepath.Join("/proc", d.Name(), "comm"))
		if err != nil || strings.TrimSpace(string(comm)) != "beam.smp" {
			continue
		}
		if first == 0 {
			first = pid
		}
		fds, _ := os.ReadDir(filepath.Join("/proc", d.Name(), "fd"))
		for _, fd := range fds {
			link, err := os.Readlink(filepath.Join("/proc", d.Name(), "fd", fd.Name()))
			if err == nil && inodes[link] {
				return pid
			}
		}
	}
	return first
}

// listeningInodes returns "socket:[inode]" of the TCP sockets listening on port.
func listeningInodes(port int) map[string]bool {
	out := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fs := strings.Fields(line)
			if len(fs) < 10 || fs[3] != "0A" { // 0A: LISTEN
				continue
			}
			_, p, ok := strings.Cut(fs[1], ":")
			if n, err := strconv.ParseUint(p, 16, 16); ok && err == nil && int(n) == port {
				out["socket:["+fs[9]+"]"] = true
			}
		}
	}
	return out
}

// process is a child process the harness started, with its output kept.
type process struct {
	name string
	cmd  *exec.Cmd
	logs *lockedBuffer
	done chan struct{}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 1<<20 { // keep the first MiB: enough to say why it failed
		return len(p), nil
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// start runs bin with args and env (added to the harness's environment
// without its PIPED_* variables, which the node would refuse).
func start(name, bin string, args, env []string) (*process, error) {
	cmd := exec.Command(bin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PIPED_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	p := &process{name: name, cmd: cmd, logs: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.logs, p.logs
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

// stop sends SIGTERM and waits up to timeout, then kills.
func (p *process) stop(timeout time.Duration) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// node is a running piped process.
type node struct {
	*process
	id, mass string
	port     int
}

// startNode starts bin/piped as node id on a free port against the broker
// at url with mass exchange mass, and waits until /readyz answers 200. Rate
// limits and the connection cap are off: the benchmark measures the node,
// not its limits.
func startNode(ctx context.Context, o *options, url, id, mass string, extraEnv ...string) (*node, error) {
	port, err := rabbitnode.FreePort()
	if err != nil {
		return nil, err
	}
	env := append([]string{
		"PIPED_AMQP_URL=" + url,
		"PIPED_AMQP_MASS_EXCHANGE=" + mass,
		"PIPED_HTTP_HOST=127.0.0.1",
		"PIPED_LOG_FORMAT=json",
		"PIPED_LOG_LEVEL=warn",
		"PIPED_WS_RATE_PER_SECOND=0",
		"PIPED_WS_FRAME_RATE=0", // the 1 × 1 run sends over 1,000 frames/s on one connection
		"PIPED_WS_MAX_CONNECTIONS=0",
		"PIPED_SHUTDOWN_DRAIN_TIMEOUT=1s",
		"PIPED_SHUTDOWN_TIMEOUT=3s",
	}, extraEnv...)
	p, err := start("piped "+id, o.piped, []string{"--port", strconv.Itoa(port), "--nodeId", id}, env)
	if err != nil {
		return nil, err
	}
	n := &node{process: p, id: id, mass: mass, port: port}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if p.exited() {
			return nil, fmt.Errorf("node %s exited at start:\n%s", id, p.logs)
		}
		resp, err := http.Get(n.httpURL("/readyz"))
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return n, nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			n.stop(5 * time.Second)
			return nil, fmt.Errorf("node %s not ready within 30s:\n%s", id, p.logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (n *node) httpURL(path string) string {
	return fmt.Sprintf("http://127.0.0.1:%d%s", n.port, path)
}

func (n *node) wsURL(token string) string {
	return fmt.Sprintf("ws://127.0.0.1:%d/api/%s", n.port, token)
}

// metrics returns the unlabelled (or region-labelled) samples of the node's
// /metrics whose names are given.
func (n *node) metrics(names ...string) (map[string]float64, error) {
	resp, err := http.Get(n.httpURL("/metrics"))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	return parseMetrics(b, names...), nil
}

// parseMetrics picks the named samples out of Prometheus text format;
// labels, if any, are ignored (the first sample of a name wins).
func parseMetrics(b []byte, names ...string) map[string]float64 {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest, ok := strings.Cut(line, " ")
		if i := strings.IndexByte(name, '{'); i >= 0 {
			name = line[:i]
			_, rest, ok = strings.Cut(line[strings.IndexByte(line, '}')+1:], " ")
		}
		if !ok || !want[name] {
			continue
		}
		if _, seen := out[name]; seen {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64); err == nil {
			out[name] = v
		}
	}
	return out
}

// raiseNoFile raises the soft limit on open files to the hard limit; the
// processes the harness starts inherit it.
func raiseNoFile() (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	l.Cur = l.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	return l.Cur, nil
}
