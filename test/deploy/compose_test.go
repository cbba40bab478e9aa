package deploy_test

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/piped-dev/piped/config"
	"github.com/piped-dev/piped/examples/echo-backend/echo"
	"github.com/piped-dev/piped/healthcheck"
	"github.com/piped-dev/piped/test/harness"
)

// composeFile is the part of docker-compose.yml the tests read.
type composeFile struct {
	Services map[string]*composeService `yaml:"services"`
}

type composeService struct {
	Image string `yaml:"image"`
	Build *struct {
		Context string `yaml:"context"`
		Target  string `yaml:"target"`
	} `yaml:"build"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Ports       []string          `yaml:"ports"`
	Volumes     []string          `yaml:"volumes"`
	// StopGracePeriod is how long compose waits after SIGTERM; 10s when empty.
	StopGracePeriod string `yaml:"stop_grace_period"`
	Healthcheck     *struct {
		Test    []string `yaml:"test"`
		Timeout string   `yaml:"timeout"`
	} `yaml:"healthcheck"`
	DependsOn map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
}

// containerPorts returns the container side of the service's published ports.
func (s *composeService) containerPorts() []string {
	var out []string
	for _, p := range s.Ports {
		out = append(out, p[strings.LastIndexByte(p, ':')+1:])
	}
	return out
}

// The Dockerfile stages docker-compose.yml builds.
const (
	pipedStage = "piped"
	echoStage  = "echo-backend"
)

// composeFacts is everything the compose rows check.
type composeFacts struct {
	Compose composeFile
	Docker  *dockerfile
	// Nginx is deploy/nginx.conf, or the file the nginx service mounts.
	Nginx string
	// EchoFlags are the flags of the echo backend's serve command.
	EchoFlags []string
}

// services returns the names of the services built from stage, sorted.
func (f *composeFacts) services(stage string) []string {
	var out []string
	for name, s := range f.Compose.Services {
		if s.Build != nil && s.Build.Target == stage {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// nodeEnv is a node service's environment in its container: the image's
// ENV, then the service's environment.
func (f *composeFacts) nodeEnv(name string) []string {
	var env []string
	if st := f.Docker.stageNamed(pipedStage); st != nil {
		env = st.env()
	}
	for k, v := range f.Compose.Services[name].Environment {
		env = append(env, k+"="+v)
	}
	return env
}

// nodeConfig is the configuration of node service name.
func (f *composeFacts) nodeConfig(name string) (*config.Config, error) {
	c, err := config.Load(nil, f.nodeEnv(name), io.Discard)
	if err != nil {
		return nil, fmt.Errorf("docker-compose.yml service %s: its environment does not load: %w", name, err)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("docker-compose.yml service %s: its configuration is not valid: %w", name, err)
	}
	return c, nil
}

var (
	echoFlagLine  = regexp.MustCompile(`(?m)^\s+-([a-z][a-z0-9-]*)`)
	nginxUpstream = regexp.MustCompile(`(?s)upstream\s+piped-nodes\s*\{(.*?)\}`)
	nginxServer   = regexp.MustCompile(`(?m)^\s*server\s+([^\s;]+)\s*;`)
	nginxReadTO   = regexp.MustCompile(`proxy_read_timeout\s+([0-9]+[smh]?)\s*;`)
)

func readComposeFacts(t *testing.T) *composeFacts {
	t.Helper()
	var f composeFacts
	b, err := os.ReadFile(filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		t.Fatalf("docker-compose.yml must be at the repository root: %v", err)
	}
	if err := yaml.Unmarshal(b, &f.Compose); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	if f.Docker, err = readDockerfile(filepath.Join(root, "Dockerfile")); err != nil {
		t.Fatal(err)
	}
	nb, err := os.ReadFile(filepath.Join(root, "deploy", "nginx.conf"))
	if err != nil {
		t.Fatal(err)
	}
	f.Nginx = string(nb)
	// The echo backend's usage lists its flags (flag's -h exits 2).
	out, _ := exec.Command(binary("echo-backend"), "-h").CombinedOutput()
	for _, m := range echoFlagLine.FindAllStringSubmatch(string(out), -1) {
		f.EchoFlags = append(f.EchoFlags, m[1])
	}
	if len(f.EchoFlags) == 0 {
		t.Fatalf("echo-backend -h lists no flags:\n%s", out)
	}
	return &f
}

// hostPort splits "host:port".
func hostPort(s string) (string, string) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return s, ""
	}
	return s[:i], s[i+1:]
}

// nginxDuration parses an nginx time such as "75s" or "75" (seconds).
func nginxDuration(s string) (time.Duration, error) {
	if s != "" && s[len(s)-1] >= '0' && s[len(s)-1] <= '9' {
		s += "s"
	}
	return time.ParseDuration(s)
}

type composeRow struct {
	name    string
	check   func(f *composeFacts) error
	breakIt func(f *composeFacts)
}

var composeRows = []composeRow{
	{
		name: "RabbitMQ with management on 5672 and 15672, health-checked",
		check: func(f *composeFacts) error {
			r := f.Compose.Services["rabbitmq"]
			if r == nil || r.Image != "rabbitmq:3-management" {
				return errors.New("docker-compose.yml needs a service rabbitmq of image rabbitmq:3-management")
			}
			if p := r.containerPorts(); !slices.Contains(p, "5672") || !slices.Contains(p, "15672") {
				return fmt.Errorf("docker-compose.yml rabbitmq publishes %v; want 5672 (AMQP) and 15672 (management UI)", r.Ports)
			}
			if r.Healthcheck == nil || len(r.Healthcheck.Test) == 0 {
				return errors.New("docker-compose.yml rabbitmq has no healthcheck: the nodes wait for service_healthy")
			}
			return nil
		},
		breakIt: func(f *composeFacts) { f.Compose.Services["rabbitmq"].Ports = []string{"5672:5672"} },
	},
	{
		name: "Jaeger on 16686 and 4317 receives the spans of nodes and backend",
		check: func(f *composeFacts) error {
			j := f.Compose.Services["jaeger"]
			if j == nil || !strings.HasPrefix(j.Image, "jaegertracing/all-in-one:") {
				return errors.New("docker-compose.yml needs a service jaeger of image jaegertracing/all-in-one")
			}
			if p := j.containerPorts(); !slices.Contains(p, "16686") || !slices.Contains(p, "4317") {
				return fmt.Errorf("docker-compose.yml jaeger publishes %v; want 16686 (UI) and 4317 (OTLP gRPC)", j.Ports)
			}
			for _, name := range f.services(pipedStage) {
				c, err := f.nodeConfig(name)
				if err != nil {
					return err
				}
				if c.Telemetry.Endpoint != "jaeger:4317" || c.Telemetry.Protocol != "grpc" {
					return fmt.Errorf("docker-compose.yml %s: telemetry.endpoint %q (protocol %s); want jaeger:4317 over grpc", name, c.Telemetry.Endpoint, c.Telemetry.Protocol)
				}
			}
			for _, name := range f.services(echoStage) {
				if got := f.Compose.Services[name].Environment["OTEL_EXPORTER_OTLP_ENDPOINT"]; got != "http://jaeger:4317" {
					return fmt.Errorf("docker-compose.yml %s: OTEL_EXPORTER_OTLP_ENDPOINT %q; want http://jaeger:4317", name, got)
				}
			}
			return nil
		},
		breakIt: func(f *composeFacts) {
			f.Compose.Services["piped-1"].Environment["PIPED_TELEMETRY_ENDPOINT"] = "jaeger:4318"
		},
	},
	{
		name: "two nodes and the echo backend are built from the Dockerfile's stages",
		check: func(f *composeFacts) error {
			nodes, backends := f.services(pipedStage), f.services(echoStage)
			if len(nodes) < 2 || len(backends) != 1 {
				return fmt.Errorf("docker-compose.yml builds nodes %v and echo backends %v; want two nodes (target %q) and one backend (target %q)", nodes, backends, pipedStage, echoStage)
			}
			for _, name := range append(nodes, backends...) {
				s := f.Compose.Services[name]
				if s.Build.Context != "." {
					return fmt.Errorf("docker-compose.yml %s: build context %q; want \".\" (the Dockerfile at the root)", name, s.Build.Context)
				}
				if f.Docker.stageNamed(s.Build.Target) == nil {
					return fmt.Errorf("docker-compose.yml %s: the Dockerfile has no stage %q", name, s.Build.Target)
				}
			}
			if f.Docker.final().Name != pipedStage {
				return fmt.Errorf("the Dockerfile's last stage (what `docker build .` builds) is %q; want %q", f.Docker.final().Name, pipedStage)
			}
			return nil
		},
		breakIt: func(f *composeFacts) { f.Compose.Services["echo-backend"].Build.Target = "echo" },
	},
	{
		name: "every PIPED_* variable of a node is Piped's, and the node's configuration is valid",
		check: func(f *composeFacts) error {
			ids := map[string]string{}
			for _, name := range f.services(pipedStage) {
				for k := range f.Compose.Services[name].Environment {
					if !strings.HasPrefix(k, "PIPED_") && !strings.HasPrefix(k, "OTEL_") {
						return fmt.Errorf("docker-compose.yml %s: %s is neither a PIPED_* nor an OTEL_* variable; Piped reads no other", name, k)
					}
				}
				c, err := f.nodeConfig(name) // unknown PIPED_* names and bad values are errors
				if err != nil {
					return err
				}
				if other, ok := ids[c.Node.ID]; ok {
					return fmt.Errorf("docker-compose.yml %s and %s share node id %q", other, name, c.Node.ID)
				}
				ids[c.Node.ID] = name
				if u, err := url.Parse(c.AMQP.URL); err != nil || u.Hostname() != "rabbitmq" {
					return fmt.Errorf("docker-compose.yml %s: amqp.url does not point at the rabbitmq service", name)
				}
			}
			return nil
		},
		breakIt: func(f *composeFacts) { f.Compose.Services["piped-2"].Environment["PIPED_WS_MAX_CONECTIONS"] = "10" },
	},
	{
		name: "the nodes' health checks run piped healthcheck",
		check: func(f *composeFacts) error {
			entry, _ := execForm(f.Docker.stageNamed(pipedStage).last("ENTRYPOINT"))
			for _, name := range f.services(pipedStage) {
				hc := f.Compose.Services[name].Healthcheck
				if hc == nil || len(hc.Test) < 3 || hc.Test[0] != "CMD" || len(entry) == 0 || hc.Test[1] != entry[0] || hc.Test[2] != "healthcheck" {
					return fmt.Errorf("docker-compose.yml %s: healthcheck test %v; want [CMD, %v, healthcheck, …]", name, hcTest(hc), entry)
				}
				// Its flags must be piped's: --help after them exits 0 only if they parse.
				cmd := exec.Command(binary("piped"), append(slices.Clone(hc.Test[2:]), "--help")...)
				cmd.Env = f.nodeEnv(name)
				if out, err := cmd.CombinedOutput(); err != nil {
					return fmt.Errorf("docker-compose.yml %s: `piped %s --help` fails: %v\n%s", name, strings.Join(hc.Test[2:], " "), err, out)
				}
				if d, err := time.ParseDuration(hc.Timeout); err != nil || d <= healthcheck.DefaultTimeout {
					return fmt.Errorf("docker-compose.yml %s: healthcheck timeout %q must be longer than piped healthcheck's %v", name, hc.Timeout, healthcheck.DefaultTimeout)
				}
			}
			return nil
		},
		breakIt: func(f *composeFacts) {
			hc := f.Compose.Services["piped-1"].Healthcheck
			hc.Test = append(hc.Test, "--interval", "5s")
		},
	},
	{
		name: "the echo backend's flags exist and it serves every node",
		check: func(f *composeFacts) error {
			for _, name := range f.services(echoStage) {
				s := f.Compose.Services[name]
				values := map[string]string{}
				for i := 0; i < len(s.Command); i++ {
					a := s.Command[i]
					if !strings.HasPrefix(a, "-") {
						return fmt.Errorf("docker-compose.yml %s: command argument %q is not a flag", name, a)
					}
					flag, v, ok := strings.Cut(strings.TrimLeft(a, "-"), "=")
					if !slices.Contains(f.EchoFlags, flag) {
						return fmt.Errorf("docker-compose.yml %s: echo-backend has no flag -%s (it has %v)", name, flag, f.EchoFlags)
					}
					if !ok && flag != "no-correlation-id" && i+1 < len(s.Command) {
						i++
						v = s.Command[i]
					}
					values[flag] = v
				}
				var nodes, ids []string
				for _, id := range strings.Split(values["nodes"], ",") {
					nodes = append(nodes, strings.TrimSpace(id))
				}
				for _, node := range f.services(pipedStage) {
					c, err := f.nodeConfig(node)
					if err != nil {
						return err
					}
					ids = append(ids, c.Node.ID)
					mass := values["mass-exchange"]
					if mass == "" {
						mass = echo.DefaultMassExchange
					}
					if mass != c.AMQP.MassExchange {
						return fmt.Errorf("docker-compose.yml %s publishes events to %q, node %s binds %q", name, mass, node, c.AMQP.MassExchange)
					}
				}
				slices.Sort(nodes)
				slices.Sort(ids)
				if !slices.Equal(nodes, ids) {
					return fmt.Errorf("docker-compose.yml %s: --nodes %q; the nodes' ids are %v", name, values["nodes"], ids)
				}
				if u, err := url.Parse(values["amqp-url"]); err != nil || u.Hostname() != "rabbitmq" {
					return fmt.Errorf("docker-compose.yml %s: --amqp-url %q does not point at the rabbitmq service", name, values["amqp-url"])
				}
			}
			return nil
		},
		breakIt: func(f *composeFacts) {
			s := f.Compose.Services["echo-backend"]
			s.Command = append(s.Command, "--node", "3")
		},
	},
	{
		name: "nginx balances over the nodes' client ports",
		check: func(f *composeFacts) error {
			m := nginxUpstream.FindStringSubmatch(f.Nginx)
			if m == nil {
				return errors.New("deploy/nginx.conf has no upstream piped-nodes")
			}
			var got, want []string
			for _, s := range nginxServer.FindAllStringSubmatch(m[1], -1) {
				got = append(got, s[1])
			}
			for _, name := range f.services(pipedStage) {
				c, err := f.nodeConfig(name)
				if err != nil {
					return err
				}
				want = append(want, fmt.Sprintf("%s:%d", name, c.HTTP.Port))
			}
			slices.Sort(got)
			if !slices.Equal(got, want) {
				return fmt.Errorf("deploy/nginx.conf upstream piped-nodes has servers %v; the nodes' client ports are %v", got, want)
			}
			return nil
		},
		breakIt: func(f *composeFacts) { f.Nginx = strings.Replace(f.Nginx, "piped-2:8080", "piped-2:9090", 1) },
	},
	{
		name: "nginx's location block is the seed's, unchanged",
		check: func(f *composeFacts) error {
			var conf []string
			for _, l := range strings.Split(f.Nginx, "\n") {
				conf = append(conf, strings.TrimSpace(l))
			}
			var seed []string
			for _, l := range strings.Split(harness.SeedNginxLocation, "\n") {
				if l = strings.TrimSpace(l); l != "" {
					seed = append(seed, l)
				}
			}
			start := slices.Index(conf, seed[0])
			if start < 0 || start+len(seed) > len(conf) || !slices.Equal(conf[start:start+len(seed)], seed) {
				return fmt.Errorf("deploy/nginx.conf does not hold the seed's location block (harness.SeedNginxLocation, which TestDrainBehindNginx runs) line for line:\n%s", strings.Join(seed, "\n"))
			}
			return nil
		},
		breakIt: func(f *composeFacts) {
			f.Nginx = strings.Replace(f.Nginx, "proxy_set_header Connection 'upgrade';", "proxy_set_header Connection $connection_upgrade;", 1)
		},
	},
	{
		name: "nginx's proxy_read_timeout is longer than ws.ping_interval",
		check: func(f *composeFacts) error {
			m := nginxReadTO.FindStringSubmatch(f.Nginx)
			if m == nil {
				return errors.New("deploy/nginx.conf sets no proxy_read_timeout (nginx's default, 60s, must then exceed ws.ping_interval; say it)")
			}
			d, err := nginxDuration(m[1])
			if err != nil {
				return fmt.Errorf("deploy/nginx.conf proxy_read_timeout %q: %w", m[1], err)
			}
			for _, name := range f.services(pipedStage) {
				c, err := f.nodeConfig(name)
				if err != nil {
					return err
				}
				if d <= c.WS.PingInterval {
					return fmt.Errorf("deploy/nginx.conf proxy_read_timeout %v is not longer than %s's ws.ping_interval %v: nginx would cut idle WebSockets", d, name, c.WS.PingInterval)
				}
			}
			return nil
		},
		breakIt: func(f *composeFacts) {
			env := f.Compose.Services["piped-1"].Environment
			env["PIPED_WS_PING_INTERVAL"], env["PIPED_WS_PONG_TIMEOUT"] = "80s", "120s"
		},
	},
	{
		name: "nginx mounts deploy/nginx.conf and publishes the client port",
		check: func(f *composeFacts) error {
			n := f.Compose.Services["nginx"]
			if n == nil || !strings.HasPrefix(n.Image, "nginx:") {
				return errors.New("docker-compose.yml needs a service nginx of an nginx image")
			}
			mounted := false
			for _, v := range n.Volumes {
				src, rest, _ := strings.Cut(v, ":")
				dst, _, _ := strings.Cut(rest, ":")
				if dst == "/etc/nginx/nginx.conf" {
					if _, err := os.Stat(filepath.Join(root, src)); err != nil {
						return fmt.Errorf("docker-compose.yml nginx mounts %s, which does not exist", src)
					}
					mounted = filepath.Clean(src) == filepath.Join("deploy", "nginx.conf")
				}
			}
			if !mounted {
				return fmt.Errorf("docker-compose.yml nginx volumes %v; want ./deploy/nginx.conf:/etc/nginx/nginx.conf:ro (the file this test checks)", n.Volumes)
			}
			if !regexp.MustCompile(`(?m)^\s*listen\s+80\s*;`).MatchString(f.Nginx) || !slices.Contains(n.containerPorts(), "80") {
				return fmt.Errorf("deploy/nginx.conf must listen on 80 and docker-compose.yml nginx publish it (ports %v)", n.Ports)
			}
			return nil
		},
		breakIt: func(f *composeFacts) {
			f.Compose.Services["nginx"].Volumes = []string{"./nginx.conf:/etc/nginx/nginx.conf:ro"}
		},
	},
	{
		name: "the nodes' published ports are their internal listeners",
		check: func(f *composeFacts) error {
			for _, name := range f.services(pipedStage) {
				c, err := f.nodeConfig(name)
				if err != nil {
					return err
				}
				port, err := internalPort(c)
				if err != nil {
					return fmt.Errorf("docker-compose.yml %s: %w", name, err)
				}
				for _, p := range f.Compose.Services[name].containerPorts() {
					if p != fmt.Sprint(port) {
						return fmt.Errorf("docker-compose.yml %s publishes container port %s; only the internal listener (%d) is published, clients go through nginx", name, p, port)
					}
				}
			}
			return nil
		},
		breakIt: func(f *composeFacts) { f.Compose.Services["piped-1"].Ports = []string{"9091:9999"} },
	},
	{
		name: "the nodes' stop_grace_period is longer than shutdown.timeout",
		check: func(f *composeFacts) error {
			for _, name := range f.services(pipedStage) {
				c, err := f.nodeConfig(name)
				if err != nil {
					return err
				}
				grace := 10 * time.Second // compose's default
				if v := f.Compose.Services[name].StopGracePeriod; v != "" {
					if grace, err = time.ParseDuration(v); err != nil {
						return fmt.Errorf("docker-compose.yml %s: stop_grace_period %q: %w", name, v, err)
					}
				}
				if grace <= c.Shutdown.Timeout {
					return fmt.Errorf("docker-compose.yml %s: stop_grace_period %v is not longer than shutdown.timeout %v: compose would kill the node mid-drain", name, grace, c.Shutdown.Timeout)
				}
			}
			return nil
		},
		breakIt: func(f *composeFacts) { f.Compose.Services["piped-2"].StopGracePeriod = "" },
	},
	{
		name: "start order: the nodes and the backend wait for RabbitMQ, nginx for the nodes",
		check: func(f *composeFacts) error {
			for _, name := range append(f.services(pipedStage), f.services(echoStage)...) {
				if f.Compose.Services[name].DependsOn["rabbitmq"].Condition != "service_healthy" {
					return fmt.Errorf("docker-compose.yml %s: depends_on rabbitmq must have condition service_healthy", name)
				}
			}
			for _, name := range f.services(pipedStage) {
				if f.Compose.Services["nginx"].DependsOn[name].Condition != "service_healthy" {
					return fmt.Errorf("docker-compose.yml nginx: depends_on %s must have condition service_healthy (its piped healthcheck)", name)
				}
			}
			return nil
		},
		breakIt: func(f *composeFacts) { delete(f.Compose.Services["nginx"].DependsOn, "piped-2") },
	},
}

func hcTest(hc *struct {
	Test    []string `yaml:"test"`
	Timeout string   `yaml:"timeout"`
}) []string {
	if hc == nil {
		return nil
	}
	return hc.Test
}

// TestComposeFile checks docker-compose.yml and deploy/nginx.conf against
// Piped's configuration, its subcommands, the echo backend's flags and the
// Dockerfile.
func TestComposeFile(t *testing.T) {
	f := readComposeFacts(t)
	for _, row := range composeRows {
		t.Run(row.name, func(t *testing.T) {
			if err := row.check(f); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestComposeRowsDetectDrift breaks each compose row's fact and expects the
// row to fail.
func TestComposeRowsDetectDrift(t *testing.T) {
	for _, row := range composeRows {
		t.Run(row.name, func(t *testing.T) {
			f := readComposeFacts(t)
			if err := row.check(f); err != nil {
				t.Skipf("the fact does not hold to begin with (TestComposeFile says why): %v", err)
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
