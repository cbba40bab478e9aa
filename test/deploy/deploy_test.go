package deploy_test

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/piped-dev/piped/healthcheck"
)

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
