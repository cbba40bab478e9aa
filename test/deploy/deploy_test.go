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

// deployRow is one fact: check returns nil when it holds; breakIt changes
// the facts so that it does not.
type deployRow struct {
	name    string
	check   func(f *deployFacts) error
	breakIt func(f *deployFacts)
}

var deployRows = []deployRow{
	{
		name: "fly.toml kill_signal is SIGTERM",
		check: func(f *deployFacts) error {
			if f.Fly.KillSignal != "SIGTERM" {
				return fmt.Errorf("fly.toml kill_signal = %q; want \"SIGTERM\", which starts Piped's drain (Fly's default is SIGINT)", f.Fly.KillSignal)
			}
			return nil
		},
		breakIt: func(f *deployFacts) { f.Fly.KillSignal = "SIGINT" },
	},
	{
		name: "Dockerfile STOPSIGNAL is fly.toml's kill_signal",
		check: func(f *deployFacts) error {
			if got := f.Docker.final().last("STOPSIGNAL"); got != f.Fly.KillSignal || got != "SIGTERM" {
				return fmt.Errorf("Dockerfile STOPSIGNAL %q, fly.toml kill_signal %q: both must be SIGTERM", got, f.Fly.KillSignal)
			}
			return nil
		},
		breakIt: func(f *deployFacts) {
			body := f.Docker.final().Body
			for i := range body {
				if body[i].Cmd == "STOPSIGNAL" {
					body[i].Args = "SIGQUIT"
				}
			}
		},
	},
	{
		name: "fly.toml kill_timeout is longer than shutdown.timeout",
		check: func(f *deployFacts) error {
			c, err := f.pipedConfig()
			if err != nil {
				return err
			}
			kt, err := f.Fly.killTimeout()
			if err != nil {
				return fmt.Errorf("fly.toml: %w", err)
			}
			if kt <= c.Shutdown.Timeout {
				return fmt.Errorf("fly.toml kill_timeout %v is not longer than shutdown.timeout %v: Fly would kill the node mid-drain", kt, c.Shutdown.Timeout)
			}
			return nil
		},
		breakIt: func(f *deployFacts) { f.Fly.KillTimeout = int64(25) },
	},
	{
		name: "fly.toml internal_port is http.port",
		check: func(f *deployFacts) error {
			c, err := f.pipedConfig()
			if err != nil {
				return err
			}
			if f.Fly.HTTPService.InternalPort != c.HTTP.Port {
				return fmt.Errorf("fly.toml [http_service] internal_port = %d; the node's client port (http.port) is %d", f.Fly.HTTPService.InternalPort, c.HTTP.Port)
			}
			return nil
		},
		breakIt: func(f *deployFacts) { f.Fly.HTTPService.InternalPort = 9090 },
	},
	{
		name: "fly.toml concurrency counts connections",
		check: func(f *deployFacts) error {
			if got := f.Fly.HTTPService.Concurrency.Type; got != "connections" {
				return fmt.Errorf("fly.toml [http_service.concurrency] type = %q; want \"connections\": a WebSocket is one long connection", got)
			}
			return nil
		},
		breakIt: func(f *deployFacts) { f.Fly.HTTPService.Concurrency.Type = "requests" },
	},
	{
		name: "fly.toml concurrency limits follow ws.max_connections",
		check: func(f *deployFacts) error {
			c, err := f.pipedConfig()
			if err != nil {
				return err
			}
			max := c.WS.MaxConnections
			cc := f.Fly.HTTPService.Concurrency
			wantSoft := max * concurrencySoftPercent / 100
			if max == 0 || cc.HardLimit != max || cc.SoftLimit != wantSoft {
				return fmt.Errorf("fly.toml [http_service.concurrency] soft_limit %d, hard_limit %d; with ws.max_connections %d the rule (docs/deploy.md) gives hard_limit %d and soft_limit %d (%d%%)",
					cc.SoftLimit, cc.HardLimit, max, max, wantSoft, concurrencySoftPercent)
			}
			return nil
		},
		breakIt: func(f *deployFacts) { f.Fly.Env["PIPED_WS_MAX_CONNECTIONS"] = "20000" },
	},
	{
		name: "fly.toml checks /readyz on the internal port",
		check: func(f *deployFacts) error {
			c, err := f.pipedConfig()
			if err != nil {
				return err
			}
			port, err := internalPort(c)
			if err != nil {
				return err
			}
			ck, ok := f.Fly.Checks["readyz"]
			if !ok {
				return errors.New("fly.toml has no [checks.readyz]")
			}
			if ck.Type != "http" || ck.Path != healthcheck.Path || ck.Port != port {
				return fmt.Errorf("fly.toml [checks.readyz]: type %q, path %q, port %d; want http, %s, %d (http.internal_addr %q)", ck.Type, ck.Path, ck.Port, healthcheck.Path, port, c.HTTP.InternalAddr)
			}
			return nil
		},
		breakIt: func(f *deployFacts) {
			ck := f.Fly.Checks["readyz"]
			ck.Port = 8080
			f.Fly.Checks["readyz"] = ck
		},
	},
	{
		name: "Dockerfile's internal address is fly.toml's",
		check: func(f *deployFacts) error {
			var image string
			for _, kv := range f.Docker.final().env() {
				if v, ok := strings.CutPrefix(kv, "PIPED_HTTP_INTERNAL_ADDR="); ok {
					image = v
				}
			}
			if image == "" {
				return errors.New("the Dockerfile's final stage does not set PIPED_HTTP_INTERNAL_ADDR")
			}
			if fly, ok := f.Fly.Env["PIPED_HTTP_INTERNAL_ADDR"]; ok && fly != image {
				return fmt.Errorf("fly.toml [env] PIPED_HTTP_INTERNAL_ADDR %q, the Dockerfile %q", fly, image)
			}
			return nil
		},
		breakIt: func(f *deployFacts) { f.Fly.Env["PIPED_HTTP_INTERNAL_ADDR"] = ":9091" },
	},
	{
		name: "the paths fly.toml checks and scrapes are routes of the internal listener",
		check: func(f *deployFacts) error {
			for name, ck := range f.Fly.Checks {
				if f.Internal[ck.Path] != http.StatusOK {
					return fmt.Errorf("fly.toml [checks.%s] path %q: the gateway's internal handler answers %d", name, ck.Path, f.Internal[ck.Path])
				}
			}
			if f.Internal[f.Fly.Metrics.Path] != http.StatusOK {
				return fmt.Errorf("fly.toml [metrics] path %q: the gateway's internal handler answers %d", f.Fly.Metrics.Path, f.Internal[f.Fly.Metrics.Path])
			}
			for _, p := range []string{healthcheck.Path, "/healthz", "/metrics"} {
				if f.Internal[p] != http.StatusOK || f.Client[p] != http.StatusNotFound {
					return fmt.Errorf("%s: internal handler %d, client handler %d; want 200 and 404 (docs/deploy.md names it as an internal endpoint)", p, f.Internal[p], f.Client[p])
				}
			}
			return nil
		},
		breakIt: func(f *deployFacts) {
			ck := f.Fly.Checks["readyz"]
			ck.Path = "/ready"
			f.Fly.Checks["readyz"] = ck
			f.Internal["/ready"] = http.StatusNotFound
		},
	},
	{
		name: "fly.toml scrapes metrics on the internal port",
		check: func(f *deployFacts) error {
			c, err := f.pipedConfig()
			if err != nil {
				return err
			}
			port, err := internalPort(c)
			if err != nil {
				return err
			}
			if f.Fly.Metrics.Port != port {
				return fmt.Errorf("fly.toml [metrics] port %d; /metrics is on the internal port %d", f.Fly.Metrics.Port, port)
			}
			return nil
		},
		breakIt: func(f *deployFacts) { f.Fly.Metrics.Port = 8080 },
	},
	{
		name: "fly.toml never stops Machines and deploys rolling",
		check: func(f *deployFacts) error {
			hs := f.Fly.HTTPService
			if hs.AutoStopMachines != "off" && hs.AutoStopMachines != false {
				return fmt.Errorf("fly.toml [http_service] auto_stop_machines = %v; want \"off\": stopping an idle-looking Machine drops its WebSockets", hs.AutoStopMachines)
			}
			if hs.MinMachinesRunning < 1 {
				return fmt.Errorf("fly.toml [http_service] min_machines_running = %d; want at least 1", hs.MinMachinesRunning)
			}
			if f.Fly.Deploy.Strategy != "rolling" {
				return fmt.Errorf("fly.toml [deploy] strategy = %q; want \"rolling\"", f.Fly.Deploy.Strategy)
			}
			return nil
		},
		breakIt: func(f *deployFacts) { f.Fly.HTTPService.AutoStopMachines = "stop" },
	},
	{
		name: "fly.toml builds the root Dockerfile and is the only fly.toml",
		check: func(f *deployFacts) error {
			if f.Fly.Build.Dockerfile != "Dockerfile" {
				return fmt.Errorf("fly.toml [build] dockerfile = %q; want \"Dockerfile\" (both at the root)", f.Fly.Build.Dockerfile)
			}
			if f.OldFlyExists {
				return fmt.Errorf("%s exists again: fly.toml lives at the repository root", oldFlyPath)
			}
			if len(f.OldFlyRefs) > 0 {
				return fmt.Errorf("these lines name the old %s; point them at fly.toml: %s", oldFlyPath, strings.Join(f.OldFlyRefs, ", "))
			}
			return nil
		},
		breakIt: func(f *deployFacts) { f.OldFlyRefs = append(f.OldFlyRefs, "README.md:1") },
	},
	{
		name: "Dockerfile EXPOSEs the client and internal ports",
		check: func(f *deployFacts) error {
			c, err := f.pipedConfig()
			if err != nil {
				return err
			}
			port, err := internalPort(c)
			if err != nil {
				return err
			}
			var got []int
			for _, in := range f.Docker.final().all("EXPOSE") {
				for _, p := range strings.Fields(in.Args) {
					n, err := strconv.Atoi(strings.TrimSuffix(p, "/tcp"))
					if err != nil {
						return fmt.Errorf("Dockerfile EXPOSE %q: %w", p, err)
					}
					got = append(got, n)
				}
			}
			slices.Sort(got)
			want := []int{c.HTTP.Port, port}
			slices.Sort(want)
			if !slices.Equal(got, want) {
				return fmt.Errorf("Dockerfile EXPOSE %v; want %v (http.port and http.internal_addr's port)", got, want)
			}
			return nil
		},
		breakIt: func(f *deployFacts) {
			st := f.Docker.final()
			st.Body = append(st.Body, instruction{Cmd: "EXPOSE", Args: "8081"})
		},
	},
	{
		name: "Dockerfile is multi-stage, its runtime stage non-root",
		check: func(f *deployFacts) error {
			if len(f.Docker.Stages) < 2 {
				return fmt.Errorf("Dockerfile has %d FROM; want a build stage and a runtime stage", len(f.Docker.Stages))
			}
			for _, st := range f.Docker.Stages[1:] {
				user := st.last("USER")
				nonroot := strings.HasSuffix(st.Image, ":nonroot") || strings.Contains(st.Image, ":nonroot-")
				if user != "" {
					nonroot = user != "root" && user != "0" && !strings.HasPrefix(user, "0:") && !strings.HasPrefix(user, "root:")
				}
				if !nonroot {
					return fmt.Errorf("Dockerfile stage %q (FROM %s, USER %q) runs as root; use a :nonroot distroless base or USER", st.Name, st.Image, user)
				}
			}
			return nil
		},
		breakIt: func(f *deployFacts) { f.Docker.final().Image = "gcr.io/distroless/static-debian12" },
	},
	{
		name: "Dockerfile builds with the Makefile's static flags",
		check: func(f *deployFacts) error {
			for _, st := range f.Docker.Stages {
				for _, run := range st.all("RUN") {
					if strings.Contains(run.Args, "go build") {
						return fmt.Errorf("Dockerfile RUN %q builds with flags of its own; run a make target (the flags live in the Makefile only)", run.Args)
					}
				}
			}
			var builds []string
			for _, line := range strings.Split(f.MakeDryRun, "\n") {
				if strings.Contains(line, " build ") && strings.Contains(line, "go") {
					builds = append(builds, line)
				}
			}
			if len(builds) == 0 {
				return errors.New("the Dockerfile's make commands build nothing (make -n shows no go build)")
			}
			for _, b := range builds {
				if !strings.Contains(b, "CGO_ENABLED=0") || !strings.Contains(b, "-trimpath") {
					return fmt.Errorf("Makefile: %q lacks CGO_ENABLED=0 or -trimpath: the image's binary must be static", b)
				}
			}
			for _, st := range f.Docker.Stages[1:] {
				ep, _ := execForm(st.last("ENTRYPOINT"))
				if len(ep) > 0 && !strings.Contains(f.MakeDryRun, "-o /out"+ep[0]) {
					return fmt.Errorf("stage %q runs %s, which the Dockerfile's make commands do not build", st.Name, ep[0])
				}
			}
			return nil
		},
		breakIt: func(f *deployFacts) { f.MakeDryRun = strings.ReplaceAll(f.MakeDryRun, "-trimpath", "") },
	},
	{
		name: "CI's node binary is built by the Makefile too",
		check: func(f *deployFacts) error {
			if !strings.Contains(f.HarnessBuild, `"make", "--no-print-directory", "build-piped"`) {
				return errors.New("test/harness/harness.go does not build the node with `make build-piped`: CI would test another binary than the image's")
			}
			return nil
		},
		breakIt: func(f *deployFacts) { f.HarnessBuild = `exec.Command("go", "build", "-o", bin, ".")` },
	},
	{
		name: "Dockerfile ENTRYPOINT is exec-form /piped",
		check: func(f *deployFacts) error {
			ep, ok := execForm(f.Docker.final().last("ENTRYPOINT"))
			if !ok || !slices.Equal(ep, []string{"/piped"}) {
				return fmt.Errorf("Dockerfile ENTRYPOINT %s; want [\"/piped\"] (exec form: the node gets SIGTERM itself, not a shell)", f.Docker.final().last("ENTRYPOINT"))
			}
			return nil
		},
		breakIt: func(f *deployFacts) {
			st := f.Docker.final()
			st.Body = append(st.Body, instruction{Cmd: "ENTRYPOINT", Args: "/piped"})
		},
	},
	{
		name: "Dockerfile HEALTHCHECK runs piped healthcheck in exec form",
		check: func(f *deployFacts) error {
			hc := parseHealthcheck(f.Docker.final().last("HEALTHCHECK"))
			cmd, ok := execForm(hc.Cmd)
			if !ok || !slices.Equal(cmd, []string{"/piped", "healthcheck"}) {
				return fmt.Errorf("Dockerfile HEALTHCHECK CMD %s; want [\"/piped\",\"healthcheck\"] (exec form: the image has no shell or curl)", hc.Cmd)
			}
			if f.HealthcheckHelpExit != 0 {
				return fmt.Errorf("`piped healthcheck --help` exits %d: the subcommand is missing", f.HealthcheckHelpExit)
			}
			if v := hc.Options["timeout"]; v != "" {
				d, err := time.ParseDuration(v)
				if err != nil || d <= healthcheck.DefaultTimeout {
					return fmt.Errorf("Dockerfile HEALTHCHECK --timeout=%s must be longer than piped healthcheck's own %v", v, healthcheck.DefaultTimeout)
				}
			}
			return nil
		},
		breakIt: func(f *deployFacts) {
			st := f.Docker.final()
			st.Body = append(st.Body, instruction{Cmd: "HEALTHCHECK", Args: "CMD /piped healthcheck"})
		},
	},
}

// TestDeployFiles checks fly.toml, the Dockerfile and the Makefile against
// each other and Piped's defaults.
func TestDeployFiles(t *testing.T) {
	f := readDeployFacts(t)
	for _, row := range deployRows {
		t.Run(row.name, func(t *testing.T) {
			if err := row.check(f); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestDeployRowsDetectDrift breaks each row's fact in a fresh copy of the facts
// and expects that row, and only a failing check, to notice: a row that
// cannot fail checks nothing.
func TestDeployRowsDetectDrift(t *testing.T) {
	for _, row := range deployRows {
		t.Run(row.name, func(t *testing.T) {
			f := readDeployFacts(t)
			if err := row.check(f); err != nil {
				t.Skipf("the fact does not hold to begin with (TestDeployFiles says why): %v", err)
			}
			row.breakIt(f)
			if err := row.check(f); err == nil {
				t.Errorf("the row still passes with its fact broken")
			} else {
				t.Logf("broken: %v", err)
			}
		})
	}
}
