package deploy_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/piped-dev/piped/config"
	"github.com/piped-dev/piped/gateway"
	"github.com/piped-dev/piped/healthcheck"
	"github.com/piped-dev/piped/telemetry"
)

// concurrencySoftPercent is the documented rule for fly.toml's
// [http_service.concurrency]: hard_limit = ws.max_connections, soft_limit =
// 80% of it (fly.toml and docs/deploy.md say so).
const concurrencySoftPercent = 80

// oldFlyPath is where fly.toml was; nothing may point there. Built in two
// parts, so that this file does not name it.
const oldFlyPath = "deploy" + "/fly.toml"

// flyConfig is the part of fly.toml the tests read.
type flyConfig struct {
	KillSignal  string `toml:"kill_signal"`
	KillTimeout any    `toml:"kill_timeout"` // seconds, or a duration string such as "30s"
	Build       struct{ Dockerfile string }
	Deploy      struct{ Strategy string }
	Env         map[string]string `toml:"env"`
	HTTPService struct {
		InternalPort       int `toml:"internal_port"`
		AutoStopMachines   any `toml:"auto_stop_machines"` // "off" (or false)
		MinMachinesRunning int `toml:"min_machines_running"`
		Concurrency        struct {
			Type      string `toml:"type"`
			SoftLimit int    `toml:"soft_limit"`
			HardLimit int    `toml:"hard_limit"`
		} `toml:"concurrency"`
	} `toml:"http_service"`
	Checks map[string]struct {
		Type, Method, Path string
		Port               int
	} `toml:"checks"`
	Metrics struct {
		Port int
		Path string
	} `toml:"metrics"`
}

// killTimeout returns kill_timeout as a duration.
func (f *flyConfig) killTimeout() (time.Duration, error) {
	switch v := f.KillTimeout.(type) {
	case int64:
		return time.Duration(v) * time.Second, nil
	case string:
		return time.ParseDuration(v)
	case nil:
		return 5 * time.Second, nil // Fly's default
	}
	return 0, fmt.Errorf("kill_timeout %v (%T): want seconds or a duration string", f.KillTimeout, f.KillTimeout)
}

// deployFacts is everything the rows check, read once.
type deployFacts struct {
	Fly    flyConfig
	Docker *dockerfile
	// MakeDryRun is `make -n` of the Dockerfile's make command: the commands
	// that build the image's binaries.
	MakeDryRun string
	// Internal and Client are the status codes of GET path on the gateway's
	// internal and client handlers, for the paths the files name.
	Internal, Client map[string]int
	// HarnessBuild is the harness's source: how CI's node binary is built.
	HarnessBuild string
	// OldFlyRefs lists the lines that still name the old path of fly.toml
	// (oldFlyPath), and OldFlyExists whether that file exists again.
	OldFlyRefs   []string
	OldFlyExists bool
	// HealthcheckHelpExit is the exit code of the built `piped healthcheck --help`.
	HealthcheckHelpExit int
}

// pipedEnv is the environment of a node in the image on Fly.io: the
// Dockerfile's ENV, then fly.toml's [env].
func (f *deployFacts) pipedEnv() []string {
	env := f.Docker.final().env()
	for k, v := range f.Fly.Env {
		env = append(env, k+"="+v)
	}
	return env
}

// pipedConfig is the configuration such a node runs with.
func (f *deployFacts) pipedConfig() (*config.Config, error) {
	c, err := config.Load(nil, append(f.pipedEnv(), "PIPED_NODE_ID=fly-machine"), io.Discard)
	if err != nil {
		return nil, fmt.Errorf("the Dockerfile's ENV and fly.toml's [env] do not load: %w", err)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("the Dockerfile's ENV and fly.toml's [env] are not valid: %w", err)
	}
	return c, nil
}

// internalPort is the port of http.internal_addr in c, or an error.
func internalPort(c *config.Config) (int, error) {
	if c.HTTP.InternalAddr == "" {
		return 0, errors.New("http.internal_addr is not set: the Dockerfile's ENV must set PIPED_HTTP_INTERNAL_ADDR")
	}
	_, p, err := splitPort(c.HTTP.InternalAddr)
	return p, err
}

func splitPort(addr string) (string, int, error) {
	i := strings.LastIndexByte(addr, ':')
	if i < 0 {
		return "", 0, fmt.Errorf("address %q has no port", addr)
	}
	p, err := strconv.Atoi(addr[i+1:])
	if err != nil {
		return "", 0, fmt.Errorf("address %q: %w", addr, err)
	}
	return addr[:i], p, nil
}

type okReadiness struct{}

func (okReadiness) Ready() error { return nil }

func readDeployFacts(t *testing.T) *deployFacts {
	t.Helper()
	var f deployFacts
	b, err := os.ReadFile(filepath.Join(root, "fly.toml"))
	if err != nil {
		t.Fatalf("fly.toml must be at the repository root: %v", err)
	}
	if err := toml.Unmarshal(b, &f.Fly); err != nil {
		t.Fatalf("fly.toml: %v", err)
	}
	if f.Docker, err = readDockerfile(filepath.Join(root, "Dockerfile")); err != nil {
		t.Fatal(err)
	}
	if len(f.Docker.Stages) == 0 {
		t.Fatal("Dockerfile: no FROM")
	}

	// What make would run for each make command of the Dockerfile.
	for _, st := range f.Docker.Stages {
		for _, run := range st.all("RUN") {
			args := strings.Fields(run.Args)
			if len(args) == 0 || args[0] != "make" {
				continue
			}
			cmd := exec.Command("make", append([]string{"-n", "--no-print-directory"}, args[1:]...)...)
			cmd.Dir = root
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("make -n %s (the Dockerfile's RUN): %v\n%s", strings.Join(args[1:], " "), err, out)
			}
			f.MakeDryRun += string(out)
		}
	}

	srv := gateway.New(gateway.Options{WS: config.Defaults().WS, Readiness: okReadiness{}, Hub: gateway.NewHub(),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: telemetry.NewMetrics()})
	f.Internal, f.Client = map[string]int{}, map[string]int{}
	paths := []string{healthcheck.Path, "/healthz", "/metrics"}
	for _, c := range f.Fly.Checks {
		paths = append(paths, c.Path)
	}
	for _, p := range append(paths, f.Fly.Metrics.Path) {
		for h, m := range map[http.Handler]map[string]int{srv.InternalHandler(): f.Internal, srv.ClientHandler(): f.Client} {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, p, nil))
			m[p] = rec.Code
		}
	}

	hb, err := os.ReadFile(filepath.Join(root, "test", "harness", "harness.go"))
	if err != nil {
		t.Fatal(err)
	}
	f.HarnessBuild = string(hb)

	_, err = os.Stat(filepath.Join(root, oldFlyPath))
	f.OldFlyExists = err == nil
	f.OldFlyRefs = filesNaming(t, oldFlyPath)

	hc := exec.Command(binary("piped"), "healthcheck", "--help")
	hc.Stdout, hc.Stderr = io.Discard, io.Discard
	hc.Dir = t.TempDir()
	f.HealthcheckHelpExit = 0
	if err := hc.Run(); err != nil {
		f.HealthcheckHelpExit = -1
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			f.HealthcheckHelpExit = exit.ExitCode()
		}
	}
	return &f
}

// filesNaming lists the repository's text files (docs, code, configs) that contain s.
func filesNaming(t *testing.T, s string) []string {
	t.Helper()
	var out []string
	exts := []string{".md", ".go", ".toml", ".yml", ".yaml", ".sh", ".json", ".conf", ".example"}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", "bin", "node_modules", "tools":
				return filepath.SkipDir
			}
			return nil
		}
		if !slices.Contains(exts, filepath.Ext(path)) && d.Name() != "Dockerfile" && d.Name() != "Makefile" {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(make([]byte, 0, 1<<20), 1<<24)
		for line := 1; sc.Scan(); line++ {
			if strings.Contains(sc.Text(), s) {
				rel, _ := filepath.Rel(root, path)
				out = append(out, fmt.Sprintf("%s:%d", rel, line))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
