package config

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/knadh/koanf/maps"
	"github.com/knadh/koanf/parsers/toml/v2"
	"github.com/spf13/pflag"
)

// with returns Defaults() changed by fn.
func with(fn func(c *Config)) Config {
	c := Defaults()
	if fn != nil {
		fn(&c)
	}
	return c
}

func TestLoad(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string // written into the working directory
		args  []string
		env   []string
		want  Config   // compared when wantErr is empty
		errs  []string // substrings of the error
		is    error    // errors.Is target, if any
		not   []string // must not be in the error
	}{
		{
			name: "defaults",
			want: Defaults(),
		},
		{
			name: "file only",
			files: map[string]string{"my.toml": `
[node]
id = "n1"
[http]
host = "127.0.0.1"
port = 9000
[ws]
allowed_origins = ["https://a.example", "https://b.example"]
ping_interval = "5s"
rate_per_second = 10
[amqp]
in_queue_expires = "0s"
[telemetry]
sample_ratio = 0.25
`},
			args: []string{"--config", "my.toml"},
			want: with(func(c *Config) {
				c.Node.ID = "n1"
				c.HTTP.Host = "127.0.0.1"
				c.HTTP.Port = 9000
				c.WS.AllowedOrigins = []string{"https://a.example", "https://b.example"}
				c.WS.PingInterval = 5 * time.Second
				c.WS.RatePerSecond = 10
				c.AMQP.InQueueExpires = 0
				c.Telemetry.SampleRatio = 0.25
			}),
		},
		{
			name:  "env over file",
			files: map[string]string{"piped.toml": "[http]\nport = 9000\nhost = \"file\"\n[requests]\ntimeout = \"5s\"\n"},
			env: []string{
				"PIPED_HTTP_PORT=9100",
				"PIPED_REQUESTS_TIMEOUT=250ms",
				"PIPED_WS_MAX_MESSAGE_BYTES=2048",
				"PIPED_WS_ALLOWED_ORIGINS=https://a.example, https://b.example,",
				"PIPED_NODE_ID=env-node",
				"PIPED_AMQP_URL=amqp://u:p@broker:5672/vh",
				"PIPED_TELEMETRY_SAMPLE_RATIO=0.5",
				"HOME=/root", // not ours
			},
			want: with(func(c *Config) {
				c.HTTP.Port = 9100
				c.HTTP.Host = "file"
				c.Requests.Timeout = 250 * time.Millisecond
				c.WS.MaxMessageBytes = 2048
				c.WS.AllowedOrigins = []string{"https://a.example", "https://b.example"}
				c.Node.ID = "env-node"
				c.AMQP.URL = "amqp://u:p@broker:5672/vh"
				c.Telemetry.SampleRatio = 0.5
			}),
		},
		{
			name:  "targeted events from the environment over the file",
			files: map[string]string{"piped.toml": "[amqp]\nevents_exchange = \"file-events\"\nevents_unbind_delay = \"5s\"\n"},
			env:   []string{"PIPED_AMQP_EVENTS_EXCHANGE=exchange-events", "PIPED_AMQP_EVENTS_UNBIND_DELAY=0s"},
			want: with(func(c *Config) {
				c.AMQP.EventsExchange = "exchange-events"
				c.AMQP.EventsUnbindDelay = 0
			}),
		},
		{
			name:  "flags over env",
			files: map[string]string{"piped.toml": "[log]\nlevel = \"error\"\n"},
			args:  []string{"--port", "9200", "--log-level=debug", "--amqp-url", "amqp://flag/", "--node-id", "flag-node"},
			env:   []string{"PIPED_HTTP_PORT=9100", "PIPED_LOG_LEVEL=warn", "PIPED_AMQP_URL=amqp://env/", "PIPED_NODE_ID=env-node"},
			want: with(func(c *Config) {
				c.HTTP.Port = 9200
				c.Log.Level = "debug"
				c.AMQP.URL = "amqp://flag/"
				c.Node.ID = "flag-node"
			}),
		},
		{
			name:  "flag not given does not override env or file",
			files: map[string]string{"piped.toml": "[log]\nlevel = \"warn\"\n[amqp]\nurl = \"amqp://file/\"\n"},
			args:  []string{"--nodeId", "1"},
			env:   []string{"PIPED_HTTP_PORT=9100"},
			want: with(func(c *Config) {
				c.Node.ID = "1"
				c.HTTP.Port = 9100
				c.Log.Level = "warn"
				c.AMQP.URL = "amqp://file/"
			}),
		},
		{
			name: "--nodeId as the original program took it",
			args: []string{"--port", "8081", "--nodeId", "1"},
			want: with(func(c *Config) { c.Node.ID = "1"; c.HTTP.Port = 8081 }),
		},
		{
			name: "--nodeId=",
			args: []string{"--nodeId=a.b"},
			want: with(func(c *Config) { c.Node.ID = "a.b" }),
		},
		{
			name: "--node-id",
			args: []string{"--node-id", "node_7"},
			want: with(func(c *Config) { c.Node.ID = "node_7" }),
		},
		{
			name: "--nodeId and --node-id agreeing",
			args: []string{"--node-id", "x", "--nodeId", "x"},
			want: with(func(c *Config) { c.Node.ID = "x" }),
		},
		{
			name: "--nodeId and --node-id disagreeing",
			args: []string{"--node-id", "x", "--nodeId", "y"},
			errs: []string{"--nodeId", "--node-id", "disagree"},
		},
		{
			name: "--config missing file",
			args: []string{"--config", "missing.toml"},
			errs: []string{"config: reading missing.toml (from --config)"},
			is:   fs.ErrNotExist,
		},
		{
			name: "PIPED_CONFIG missing file",
			env:  []string{"PIPED_CONFIG=missing.toml"},
			errs: []string{"missing.toml", "PIPED_CONFIG"},
			is:   fs.ErrNotExist,
		},
		{
			name:  "./piped.toml picked up when present",
			files: map[string]string{"piped.toml": "[node]\nid = \"from-cwd\"\n"},
			want:  with(func(c *Config) { c.Node.ID = "from-cwd" }),
		},
		{
			name:  "--config wins over ./piped.toml",
			files: map[string]string{"piped.toml": "[node]\nid = \"cwd\"\n", "other.toml": "[http]\nport = 1234\n"},
			args:  []string{"--config", "other.toml"},
			want:  with(func(c *Config) { c.HTTP.Port = 1234 }),
		},
		{
			name:  "PIPED_CONFIG wins over ./piped.toml",
			files: map[string]string{"piped.toml": "[node]\nid = \"cwd\"\n", "other.toml": "[http]\nport = 1234\n"},
			env:   []string{"PIPED_CONFIG=other.toml"},
			want:  with(func(c *Config) { c.HTTP.Port = 1234 }),
		},
		{
			name:  "--config wins over PIPED_CONFIG",
			files: map[string]string{"a.toml": "[http]\nport = 1111\n", "b.toml": "[http]\nport = 2222\n"},
			args:  []string{"--config=b.toml"},
			env:   []string{"PIPED_CONFIG=a.toml"},
			want:  with(func(c *Config) { c.HTTP.Port = 2222 }),
		},
		{
			name:  "empty --config reads no file",
			files: map[string]string{"piped.toml": "[node]\nid = \"cwd\"\n"},
			args:  []string{"--config="},
			want:  Defaults(),
		},
		{
			name:  "unknown file key names the key",
			files: map[string]string{"piped.toml": "[ws]\nmax_mesage_bytes = 100\n"},
			errs:  []string{`config: unknown key "ws.max_mesage_bytes" in piped.toml`, `did you mean "ws.max_message_bytes"?`},
		},
		{
			name:  "unknown file section",
			files: map[string]string{"piped.toml": "[websocket]\nping_interval = \"1s\"\n"},
			errs:  []string{`unknown key "websocket.ping_interval"`, `did you mean "ws.ping_interval"?`},
		},
		{
			name:  "key outside its section",
			files: map[string]string{"piped.toml": "port = 80\n"},
			errs:  []string{`unknown key "port"`, `did you mean "http.port"?`},
		},
		{
			name:  "section that is not a table",
			files: map[string]string{"piped.toml": "ws = 1\n"},
			errs:  []string{"config: ws must be a table ([ws]), got an integer in piped.toml"},
		},
		{
			name:  "misplaced URL is not echoed",
			files: map[string]string{"piped.toml": "amqp = \"amqp://u:s3cret@h/\"\n"},
			errs:  []string{"config: amqp must be a table ([amqp]), got a string in piped.toml"},
			not:   []string{"s3cret"},
		},
		{
			name:  "empty section is fine",
			files: map[string]string{"piped.toml": "[ws]\n[telemetry]\n"},
			want:  Defaults(),
		},
		{
			name:  "all unknown keys are reported",
			files: map[string]string{"piped.toml": "[ws]\nfoo = 1\n[amqp]\nbar = 2\n"},
			errs:  []string{`"ws.foo"`, `"amqp.bar"`},
		},
		{
			name: "unknown PIPED_ variable names it and its key",
			env:  []string{"PIPED_WS_MAX_MESAGE_BYTES=1"},
			errs: []string{"config: unknown environment variable PIPED_WS_MAX_MESAGE_BYTES", `"ws.max_mesage_bytes"`, "did you mean PIPED_WS_MAX_MESSAGE_BYTES?"},
		},
		{
			name: "PIPED_ variable without a section",
			env:  []string{"PIPED_PORT=9000"},
			errs: []string{"unknown environment variable PIPED_PORT", `"port"`, "PIPED_HTTP_PORT"},
		},
		{
			name: "Kubernetes service links are not ours",
			env: []string{
				"PIPED_SERVICE_HOST=10.0.0.1", "PIPED_SERVICE_PORT=8080", "PIPED_SERVICE_PORT_HTTP=8080",
				"PIPED_PORT=tcp://10.0.0.1:8080", "PIPED_PORT_8080_TCP=tcp://10.0.0.1:8080",
				"PIPED_PORT_8080_TCP_PROTO=tcp", "PIPED_PORT_8080_TCP_PORT=8080", "PIPED_PORT_8080_TCP_ADDR=10.0.0.1",
				"PIPED_METRICS_SERVICE_HOST=10.0.0.2", "PIPED_METRICS_PORT=tcp://10.0.0.2:9090",
			},
			want: Defaults(),
		},
		{
			name:  "invalid duration in the file names the key",
			files: map[string]string{"piped.toml": "[ws]\nping_interval = \"abc\"\n"},
			errs:  []string{`config: ws.ping_interval: invalid duration "abc"`, "in piped.toml", `"30s"`},
		},
		{
			name: "invalid duration in the environment names the key and variable",
			env:  []string{"PIPED_REQUESTS_TIMEOUT=30"},
			errs: []string{`config: requests.timeout: invalid duration "30"`, "from PIPED_REQUESTS_TIMEOUT"},
		},
		{
			name:  "duration as a TOML integer",
			files: map[string]string{"piped.toml": "[shutdown]\ntimeout = 30\n"},
			errs:  []string{`config: shutdown.timeout: expected a duration string such as "30s", got integer 30`},
		},
		{
			name:  "string for an integer in the file",
			files: map[string]string{"piped.toml": "[http]\nport = \"abc\"\n"},
			errs:  []string{`config: http.port: expected an integer, got string "abc" (in piped.toml)`},
		},
		{
			name:  "float for an integer in the file",
			files: map[string]string{"piped.toml": "[ws]\nmax_inflight = 1.5\n"},
			errs:  []string{"ws.max_inflight: expected an integer, got float 1.5"},
		},
		{
			name:  "integer for a string in the file",
			files: map[string]string{"piped.toml": "[node]\nid = 1\n"},
			errs:  []string{`node.id: expected a string (quote it: "1"), got integer 1`},
		},
		{
			name:  "string for a list in the file",
			files: map[string]string{"piped.toml": "[ws]\nallowed_origins = \"*\"\n"},
			errs:  []string{"ws.allowed_origins: expected an array of strings"},
		},
		{
			name:  "number in a list in the file",
			files: map[string]string{"piped.toml": "[ws]\nallowed_origins = [\"*\", 2]\n"},
			errs:  []string{"ws.allowed_origins: element 1: expected a string, got integer 2"},
		},
		{
			name:  "integer for a float in the file",
			files: map[string]string{"piped.toml": "[telemetry]\nsample_ratio = 0\n"},
			want:  with(func(c *Config) { c.Telemetry.SampleRatio = 0 }),
		},
		{
			name:  "non-string amqp.url is not echoed",
			files: map[string]string{"piped.toml": "[amqp]\nurl = 12345\n"},
			errs:  []string{"amqp.url: expected a string, got an integer"},
			not:   []string{"12345"},
		},
		{
			name: "invalid integer in the environment",
			env:  []string{"PIPED_WS_MAX_INFLIGHT=lots"},
			errs: []string{`config: ws.max_inflight: invalid integer "lots" (from PIPED_WS_MAX_INFLIGHT)`},
		},
		{
			name: "integer out of range in the environment",
			env:  []string{"PIPED_HTTP_PORT=99999999999999999999"},
			errs: []string{"http.port: integer", "out of range"},
		},
		{
			name: "invalid float in the environment",
			env:  []string{"PIPED_WS_RATE_PER_SECOND=NaN"},
			errs: []string{`ws.rate_per_second: invalid number "NaN"`},
		},
		{
			name: "empty list from the environment",
			env:  []string{"PIPED_WS_ALLOWED_ORIGINS="},
			want: with(func(c *Config) { c.WS.AllowedOrigins = []string{} }),
		},
		{
			name: "lower-case env names are read the same",
			env:  []string{"PIPED_log_level=debug"},
			want: with(func(c *Config) { c.Log.Level = "debug" }),
		},
		{
			name: "later duplicate env wins",
			env:  []string{"PIPED_HTTP_PORT=1", "PIPED_HTTP_PORT=2"},
			want: with(func(c *Config) { c.HTTP.Port = 2 }),
		},
		{
			name:  "errors of several sources are all reported",
			files: map[string]string{"piped.toml": "[ws]\nnope = 1\n"},
			env:   []string{"PIPED_NOPE_X=1"},
			errs:  []string{`"ws.nope"`, "PIPED_NOPE_X"},
		},
		{
			name:  "TOML syntax error has a position",
			files: map[string]string{"piped.toml": "[http]\nport = = 1\n"},
			errs:  []string{"config: piped.toml:2:"},
		},
		{
			name:  "TOML syntax error does not quote the line",
			files: map[string]string{"piped.toml": "[amqp]\nurl = \"amqp://u:s3cret@h/\n"},
			errs:  []string{"config: piped.toml:2:"},
			not:   []string{"s3cret"},
		},
		{
			name: "positional argument",
			args: []string{"--nodeId", "1", "s3cret-extra"},
			errs: []string{`config: 1 unexpected argument(s), the first of 12 bytes`},
			not:  []string{"s3cret"}, // a stray argument may be a secret: never echoed
		},
		{
			name: "unknown flag",
			args: []string{"--prot", "80"},
			errs: []string{"config: unknown flag: --prot; did you mean --port? (see --help)"},
		},
		{
			name: "flag in the wrong case",
			args: []string{"--nodeid", "1"},
			errs: []string{"config: unknown flag: --nodeid; did you mean --nodeId?"},
		},
		{
			name: "flag in the wrong case, upper",
			args: []string{"--NODE-ID", "1"},
			errs: []string{"unknown flag: --NODE-ID; did you mean --node-id?"},
		},
		{
			name: "flag with an underscore",
			args: []string{"--log_level", "debug"},
			errs: []string{"did you mean --log-level?"},
		},
		{
			name: "long flag with one dash",
			args: []string{"-nodeId", "1"},
			errs: []string{"did you mean --nodeId?"},
		},
		{
			name: "unknown flag nothing like any",
			args: []string{"--frobnicate"},
			errs: []string{"config: unknown flag: --frobnicate (see --help)"},
			not:  []string{"did you mean"},
		},
		{
			name: "invalid --port",
			args: []string{"--port", "http"},
			errs: []string{"config:", `"http"`, "--port"},
		},
		{
			name: "the issue's [[routes]] example",
			files: map[string]string{"piped.toml": `
[[routes]]
match = "billing.*"
exchange = "billing"
routing_key = "{method}"
declare = true
type = "topic"
timeout = "5s"
`},
			want: with(func(c *Config) {
				c.Routes = []Route{{Match: "billing.*", Exchange: "billing", RoutingKey: "{method}", Declare: true, Type: "topic", Durable: true, Timeout: 5 * time.Second}}
			}),
		},
		{
			name: "routes keep their order and get their defaults",
			files: map[string]string{"piped.toml": `
[[routes]]
match = "billing.pay"
exchange = "pay"
rate = 2.5
burst = 3
max_payload_bytes = 4096

[[routes]]
match = "billing.*"
exchange = "billing"
declare = true
durable = false

[[routes]]
match = "$connect"
exchange = "presence"
routing_key = ""
type = "fanout"
`},
			want: with(func(c *Config) {
				c.Routes = []Route{
					{Match: "billing.pay", Exchange: "pay", RoutingKey: "{method}", Durable: true, Rate: 2.5, Burst: 3, MaxPayloadBytes: 4096},
					{Match: "billing.*", Exchange: "billing", RoutingKey: "{method}", Declare: true, Type: "topic", Durable: false},
					{Match: "$connect", Exchange: "presence", RoutingKey: "", Type: "fanout", Durable: true},
				}
			}),
		},
		{
			name:  "unknown key in a route names the route",
			files: map[string]string{"piped.toml": "[[routes]]\nmatch = \"a\"\n[[routes]]\nmatch = \"b\"\nexchnage = \"x\"\n"},
			errs:  []string{"config: routes[1].exchnage: unknown key (did you mean routes[1].exchange?) (in piped.toml)"},
		},
		{
			name:  "unknown key in a route nothing like any",
			files: map[string]string{"piped.toml": "[[routes]]\nmatch = \"a\"\nfrobnicate = 1\n"},
			errs:  []string{"config: routes[0].frobnicate: unknown key (in piped.toml)"},
			not:   []string{"did you mean"},
		},
		{
			name:  "wrong type in a route names the route and key",
			files: map[string]string{"piped.toml": "[[routes]]\nmatch = \"a\"\ntimeout = 5\n"},
			errs:  []string{`config: routes[0].timeout: expected a duration string such as "30s", got integer 5 (in piped.toml)`},
		},
		{
			name:  "routes that are not a list of tables",
			files: map[string]string{"piped.toml": "routes = \"billing.*\"\n"},
			errs:  []string{"config: routes: expected a list of tables ([[routes]]), got a string (in piped.toml)"},
		},
		{
			name:  "a route that is not a table",
			files: map[string]string{"piped.toml": "routes = [1]\n"},
			errs:  []string{"config: routes[0]: expected a table, got an integer (in piped.toml)"},
		},
		{
			name:  "a route key misplaced in a section",
			files: map[string]string{"piped.toml": "[routing]\nmatch = \"a\"\n"},
			errs:  []string{`unknown key "routing.match" in piped.toml`},
		},
		{
			name: "routes cannot come from the environment",
			env:  []string{"PIPED_ROUTES=billing.*"},
			errs: []string{"config: PIPED_ROUTES cannot be set from the environment: [[routes]] come from the configuration file only"},
		},
		{
			name: "the new sections from the environment",
			env: []string{
				"PIPED_ROUTING_DEFAULT_ROUTE=false", "PIPED_LIFECYCLE_CONNECT=true", "PIPED_LIFECYCLE_AUTHORIZE_TIMEOUT=2s",
				"PIPED_LIFECYCLE_AUTHORIZE_FAILURE=allow", "PIPED_LIFECYCLE_REFRESH_INTERVAL=1m",
				"PIPED_AUTH_JWKS_URL=https://auth.example/jwks.json", "PIPED_AUTH_JWT_PUBLIC_KEYS=a, b",
				"PIPED_AUTH_LEEWAY=0s", "PIPED_RELOAD_WATCH=1",
			},
			want: with(func(c *Config) {
				c.Routing.DefaultRoute = false
				c.Lifecycle.Connect = true
				c.Lifecycle.AuthorizeTimeout = 2 * time.Second
				c.Lifecycle.AuthorizeFailure = "allow"
				c.Lifecycle.RefreshInterval = time.Minute
				c.Auth.JWKSURL = "https://auth.example/jwks.json"
				c.Auth.JWTPublicKeys = []string{"a", "b"}
				c.Auth.Leeway = 0
				c.Reload.Watch = true
			}),
		},
		{
			name: "environment integers are decimal and may have spaces",
			env:  []string{"PIPED_HTTP_PORT= 010 "},
			want: with(func(c *Config) { c.HTTP.Port = 10 }),
		},
		{
			name: "jwt mode raises ws.token_max_length",
			env:  []string{"PIPED_AUTH_MODE=jwt"},
			want: with(func(c *Config) { c.Auth.Mode = "jwt"; c.WS.TokenMaxLength = 4096 }),
		},
		{
			name: "jwt mode keeps a ws.token_max_length from the environment",
			env:  []string{"PIPED_AUTH_MODE=jwt", "PIPED_WS_TOKEN_MAX_LENGTH=2000"},
			want: with(func(c *Config) { c.Auth.Mode = "jwt"; c.WS.TokenMaxLength = 2000 }),
		},
		{
			name:  "jwt mode keeps a ws.token_max_length the file sets to its default",
			files: map[string]string{"piped.toml": "[auth]\nmode = \"jwt\"\n[ws]\ntoken_max_length = 256\n"},
			want:  with(func(c *Config) { c.Auth.Mode = "jwt"; c.WS.TokenMaxLength = 256 }),
		},
		{
			name:  "non-string auth.jwt_secret is not echoed",
			files: map[string]string{"piped.toml": "[auth]\njwt_secret = 987654321\n"},
			errs:  []string{"auth.jwt_secret: expected a string, got an integer"},
			not:   []string{"987654321"},
		},
		{
			name: "a variable that names a section",
			env:  []string{"PIPED_WS=1", "PIPED_WS_MAX_INFLIGHT=2"},
			errs: []string{`config: unknown environment variable PIPED_WS (it would set key "ws")`},
			not:  []string{"MAX_INFLIGHT"},
		},
		{
			name: "PIPED_ alone",
			env:  []string{"PIPED_=1"},
			errs: []string{`config: unknown environment variable PIPED_ (it would set key "")`},
		},
		{
			name: "invalid boolean from the environment",
			env:  []string{"PIPED_RELOAD_WATCH=yes"},
			errs: []string{`config: reload.watch: invalid boolean "yes"; use true or false (from PIPED_RELOAD_WATCH)`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			t.Chdir(dir)
			for name, content := range tt.files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			got, err := Load(tt.args, tt.env, io.Discard)
			if len(tt.errs) == 0 {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				if !reflect.DeepEqual(*got, tt.want) {
					t.Errorf("Load:\n got %+v\nwant %+v", *got, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("Load: no error, want one containing %q", tt.errs)
			}
			if got != nil {
				t.Errorf("Load returned a config with error %v", err)
			}
			for _, s := range tt.errs {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
			for _, s := range tt.not {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error %q contains %q", err, s)
				}
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v is not %v", err, tt.is)
			}
			if strings.Count(err.Error(), "config: config:") > 0 {
				t.Errorf("error %q says config: twice", err)
			}
		})
	}
}

func TestLoadHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"--nodeId", "1", "-h"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			var out bytes.Buffer
			c, err := Load(args, nil, &out)
			if !errors.Is(err, ErrHelp) || !errors.Is(err, pflag.ErrHelp) {
				t.Fatalf("Load(%q) = %v, want ErrHelp wrapping pflag.ErrHelp", args, err)
			}
			if c != nil {
				t.Error("Load returned a config with ErrHelp")
			}
			for _, s := range []string{"Usage: piped", "--config FILE", "--node-id ID", "--nodeId", "--port PORT", "--amqp-url URL", "--log-level LEVEL", "-h, --help", "PIPED_"} {
				if !strings.Contains(out.String(), s) {
					t.Errorf("usage does not contain %q:\n%s", s, out.String())
				}
			}
			if strings.Contains(out.String(), "guest:guest") {
				t.Errorf("usage shows the default password:\n%s", out.String())
			}
		})
	}
	if !strings.HasPrefix(ErrHelp.Error(), "config: ") {
		t.Errorf("ErrHelp = %q", ErrHelp)
	}
}

// routeIndex matches the index of a route key, "routes[12]".
var routeIndex = regexp.MustCompile(`^routes\[\d+\]`)

// routes returns a Validate case's change: set these routes.
func routes(rs ...Route) func(c *Config) {
	return func(c *Config) { c.Routes = rs }
}

// testPublicKey and testPrivateKey are a PEM ECDSA P-256 key pair.
var testPublicKey, testPrivateKey = func() (string, string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		panic(err)
	}
	priv, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		panic(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})),
		string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: priv}))
}()

// valid is a configuration that passes Validate.
func valid() Config {
	return with(func(c *Config) { c.Node.ID = "node-1" })
}

func TestValidate(t *testing.T) {
	long := strings.Repeat("p", 250)
	tests := []struct {
		name string
		key  string // the key the error must name
		fn   func(c *Config)
		want string // further substring, optional
	}{
		{"node.id missing", "node.id", func(c *Config) { c.Node.ID = "" }, "--nodeId"},
		{"node.id missing mentions env", "node.id", func(c *Config) { c.Node.ID = "" }, "PIPED_NODE_ID"},
		{"node.id bad character", "node.id", func(c *Config) { c.Node.ID = "a/b" }, `"a/b"`},
		{"node.id space", "node.id", func(c *Config) { c.Node.ID = "a b" }, ""},
		{"node.id too long", "node.id", func(c *Config) { c.Node.ID = strings.Repeat("a", 65) }, ""},
		{"node.region bad character", "node.region", func(c *Config) { c.Node.Region = "eu west" }, `"eu west"`},
		{"node.region too long", "node.region", func(c *Config) { c.Node.Region = strings.Repeat("r", 65) }, ""},
		{"http.port zero", "http.port", func(c *Config) { c.HTTP.Port = 0 }, "at least 1, got 0"},
		{"http.port too big", "http.port", func(c *Config) { c.HTTP.Port = 65536 }, "at most 65535"},
		{"http.read_header_timeout zero", "http.read_header_timeout", func(c *Config) { c.HTTP.ReadHeaderTimeout = 0 }, ""},
		{"http.idle_timeout zero", "http.idle_timeout", func(c *Config) { c.HTTP.IdleTimeout = 0 }, ""},
		{"http.max_header_bytes small", "http.max_header_bytes", func(c *Config) { c.HTTP.MaxHeaderBytes = 100 }, "at least 4096, got 100"},
		{"http.max_header_bytes big", "http.max_header_bytes", func(c *Config) { c.HTTP.MaxHeaderBytes = 2 << 20 }, "at most 1048576"},
		{"http.internal_addr no port", "http.internal_addr", func(c *Config) { c.HTTP.InternalAddr = "9090" }, "host:port"},
		{"http.internal_addr bad port", "http.internal_addr", func(c *Config) { c.HTTP.InternalAddr = ":http" }, "1 to 65535"},
		{"http.internal_addr port zero", "http.internal_addr", func(c *Config) { c.HTTP.InternalAddr = ":0" }, "1 to 65535"},
		{"http.internal_addr is the client port", "http.internal_addr", func(c *Config) { c.HTTP.InternalAddr = ":8080" }, "client port"},
		{"http.internal_addr same host and port", "http.internal_addr", func(c *Config) { c.HTTP.Host = "127.0.0.1"; c.HTTP.InternalAddr = "127.0.0.1:8080" }, "client port"},
		{"ws.max_message_bytes small", "ws.max_message_bytes", func(c *Config) { c.WS.MaxMessageBytes = 12 }, "must be at least 1024, got 12"},
		{"ws.max_message_bytes big", "ws.max_message_bytes", func(c *Config) { c.WS.MaxMessageBytes = 64<<20 + 1 }, "at most 67108864"},
		{"ws.allowed_origins empty element", "ws.allowed_origins", func(c *Config) { c.WS.AllowedOrigins = []string{"*", ""} }, "element 1"},
		{"ws.ping_interval zero", "ws.ping_interval", func(c *Config) { c.WS.PingInterval = 0 }, "at least 1s, got 0s"},
		{"ws.ping_interval 1ns", "ws.ping_interval", func(c *Config) { c.WS.PingInterval = time.Nanosecond }, "at least 1s, got 1ns"},
		{"ws.ping_interval 25ms", "ws.ping_interval", func(c *Config) { c.WS.PingInterval = 25 * time.Millisecond }, "at least 1s"},
		{"ws.ping_interval not below pong", "ws.ping_interval", func(c *Config) { c.WS.PingInterval = c.WS.PongTimeout }, "ws.pong_timeout"},
		{"ws.pong_timeout zero", "ws.pong_timeout", func(c *Config) { c.WS.PongTimeout = 0 }, ""},
		{"ws.write_timeout zero", "ws.write_timeout", func(c *Config) { c.WS.WriteTimeout = 0 }, ""},
		{"ws.write_timeout negative", "ws.write_timeout", func(c *Config) { c.WS.WriteTimeout = -time.Second }, ""},
		{"ws.send_queue_bytes small", "ws.send_queue_bytes", func(c *Config) { c.WS.SendQueueBytes = 4095 }, "4096"},
		{"ws.max_inflight zero", "ws.max_inflight", func(c *Config) { c.WS.MaxInflight = 0 }, ""},
		{"amqp.max_message_bytes small", "amqp.max_message_bytes", func(c *Config) { c.AMQP.MaxMessageBytes = 10 }, "at least 1024"},
		{"ws.frame_rate negative", "ws.frame_rate", func(c *Config) { c.WS.FrameRate = -1 }, "at least 0"},
		{"ws.frame_burst zero with a rate", "ws.frame_burst", func(c *Config) { c.WS.FrameBurst = 0 }, "at least 1 when ws.frame_rate"},
		{"ws.max_depth zero", "ws.max_depth", func(c *Config) { c.WS.MaxDepth = 0 }, "at least 1, got 0"},
		{"ws.max_depth too deep", "ws.max_depth", func(c *Config) { c.WS.MaxDepth = 1001 }, "at most 1000"},
		{"ws.rate_per_second negative", "ws.rate_per_second", func(c *Config) { c.WS.RatePerSecond = -1 }, ""},
		{"ws.rate_burst zero with a rate", "ws.rate_burst", func(c *Config) { c.WS.RateBurst = 0 }, "ws.rate_per_second"},
		{"ws.rate_burst negative", "ws.rate_burst", func(c *Config) { c.WS.RatePerSecond = 0; c.WS.RateBurst = -1 }, ""},
		{"ws.max_connections negative", "ws.max_connections", func(c *Config) { c.WS.MaxConnections = -1 }, ""},
		{"ws.token_max_length zero", "ws.token_max_length", func(c *Config) { c.WS.TokenMaxLength = 0 }, ""},
		{"ws.token_max_length big", "ws.token_max_length", func(c *Config) { c.WS.TokenMaxLength = 4097 }, ""},
		{"amqp.url scheme", "amqp.url", func(c *Config) { c.AMQP.URL = "http://u:s3cret@h/" }, `"http"`},
		{"amqp.url without scheme", "amqp.url", func(c *Config) { c.AMQP.URL = "u:s3cret@h:5672" }, "amqp://"},
		{"amqp.url unparsable", "amqp.url", func(c *Config) { c.AMQP.URL = "amqp://u:s3cret%zz@h/" }, "percent-encode"},
		{"amqp.url space", "amqp.url", func(c *Config) { c.AMQP.URL = "amqp://u:s3c ret@h/" }, ""},
		{"amqp.url unescaped slash", "amqp.url", func(c *Config) { c.AMQP.URL = "amqp://u:12/s3cret@h/" }, "percent-encode"},
		{"amqp.url empty", "amqp.url", func(c *Config) { c.AMQP.URL = "" }, ""},
		{"amqp.urls scheme", "amqp.urls", func(c *Config) { c.AMQP.URLs = []string{"amqp://u:s3cret@a/", "http://u:s3cret@b/"} }, `element 1: scheme must be amqp or amqps, got "http"`},
		{"amqp.urls without scheme", "amqp.urls", func(c *Config) { c.AMQP.URLs = []string{"u:s3cret@h:5672"} }, "element 0: must start with amqp://"},
		{"amqp.urls unescaped slash", "amqp.urls", func(c *Config) { c.AMQP.URLs = []string{"amqp://u:12/s3cret@h/"} }, "element 0: has an \"@\" after the host"},
		{"amqp.urls empty element", "amqp.urls", func(c *Config) { c.AMQP.URLs = []string{"amqp://u:s3cret@a/", ""} }, "element 1: must start with amqp://"},
		{"amqp.urls repeated", "amqp.urls", func(c *Config) {
			c.AMQP.URLs = []string{"amqp://u:s3cret@a/", "amqp://u:s3cret@b/", "amqp://u:s3cret@a/"}
		}, "element 2: is the same address as element 0"},
		{"amqp.urls two vhosts", "amqp.urls", func(c *Config) {
			c.AMQP.URLs = []string{"amqp://u:s3cret@a/piped", "amqp://u:s3cret@b/piped", "amqp://u:s3cret@c/other"}
		}, "element 2: names another virtual host than element 0"},
		{"amqp.urls set, amqp.url bad: only the list is checked", "amqp.urls", func(c *Config) {
			c.AMQP.URL = "http://u:s3cret@h/"
			c.AMQP.URLs = []string{"amqp://u:s3cret@a/", "amqps://u:s3cret@b", "amqp://u:s3cret@a/x"}
		}, "element 2: names another virtual host than element 0"},
		{"amqp.exchange_in_prefix empty", "amqp.exchange_in_prefix", func(c *Config) { c.AMQP.ExchangeInPrefix = "" }, "empty"},
		{"amqp.exchange_out_prefix empty", "amqp.exchange_out_prefix", func(c *Config) { c.AMQP.ExchangeOutPrefix = "" }, "empty"},
		{"amqp.queue_in_prefix empty", "amqp.queue_in_prefix", func(c *Config) { c.AMQP.QueueInPrefix = "" }, "empty"},
		{"amqp.queue_out_prefix empty", "amqp.queue_out_prefix", func(c *Config) { c.AMQP.QueueOutPrefix = "" }, "empty"},
		{"amqp.queue_in_prefix too long with node id", "amqp.queue_in_prefix", func(c *Config) { c.AMQP.QueueInPrefix = long }, "255"},
		{"amqp.exchange_out_prefix too long with node id", "amqp.exchange_out_prefix", func(c *Config) { c.AMQP.ExchangeOutPrefix = long }, "255"},
		{"amqp.queue_out_prefix reserved", "amqp.queue_out_prefix", func(c *Config) { c.AMQP.QueueOutPrefix = "amq.out-" }, "amq."},
		{"amqp.exchange prefixes equal", "amqp.exchange_out_prefix", func(c *Config) { c.AMQP.ExchangeOutPrefix = c.AMQP.ExchangeInPrefix }, "amqp.exchange_in_prefix"},
		{"amqp.queue prefixes equal", "amqp.queue_out_prefix", func(c *Config) { c.AMQP.QueueOutPrefix = c.AMQP.QueueInPrefix }, "amqp.queue_in_prefix"},
		{"amqp.mass_exchange empty", "amqp.mass_exchange", func(c *Config) { c.AMQP.MassExchange = "" }, "empty"},
		{"amqp.mass_exchange too long", "amqp.mass_exchange", func(c *Config) { c.AMQP.MassExchange = strings.Repeat("m", 256) }, "255"},
		{"amqp.mass_exchange reserved", "amqp.mass_exchange", func(c *Config) { c.AMQP.MassExchange = "amq.fanout" }, ""},
		{"amqp.events_exchange reserved", "amqp.events_exchange", func(c *Config) { c.AMQP.EventsExchange = "amq.direct" }, "amq."},
		{"amqp.events_exchange too long", "amqp.events_exchange", func(c *Config) { c.AMQP.EventsExchange = strings.Repeat("e", 256) }, "255"},
		{"amqp.events_exchange is the mass exchange", "amqp.events_exchange", func(c *Config) { c.AMQP.EventsExchange = c.AMQP.MassExchange }, "amqp.mass_exchange"},
		{"amqp.events_exchange is the node's in-exchange", "amqp.events_exchange", func(c *Config) { c.AMQP.EventsExchange = c.AMQP.ExchangeInPrefix + c.Node.ID }, "own exchanges"},
		{"amqp.events_unbind_delay negative", "amqp.events_unbind_delay", func(c *Config) { c.AMQP.EventsUnbindDelay = -time.Second }, "at least 0"},
		{"amqp.in_queue_expires sub-second", "amqp.in_queue_expires", func(c *Config) { c.AMQP.InQueueExpires = 500 * time.Millisecond }, "1s"},
		{"amqp.in_queue_expires negative", "amqp.in_queue_expires", func(c *Config) { c.AMQP.InQueueExpires = -time.Second }, ""},
		{"amqp.prefetch zero", "amqp.prefetch", func(c *Config) { c.AMQP.Prefetch = 0 }, ""},
		{"amqp.prefetch big", "amqp.prefetch", func(c *Config) { c.AMQP.Prefetch = 65536 }, ""},
		{"amqp.confirm_timeout zero", "amqp.confirm_timeout", func(c *Config) { c.AMQP.ConfirmTimeout = 0 }, ""},
		{"amqp.reconnect_min zero", "amqp.reconnect_min", func(c *Config) { c.AMQP.ReconnectMin = 0 }, ""},
		{"amqp.reconnect_max below min", "amqp.reconnect_max", func(c *Config) { c.AMQP.ReconnectMax = c.AMQP.ReconnectMin - 1 }, "amqp.reconnect_min"},
		{"amqp.heartbeat negative", "amqp.heartbeat", func(c *Config) { c.AMQP.Heartbeat = -time.Second }, ""},
		{"amqp.heartbeat sub-second", "amqp.heartbeat", func(c *Config) { c.AMQP.Heartbeat = 500 * time.Millisecond }, ""},
		{"requests.timeout sub-millisecond", "requests.timeout", func(c *Config) { c.Requests.Timeout = time.Microsecond }, "1ms"},
		{"shutdown.drain_timeout negative", "shutdown.drain_timeout", func(c *Config) { c.Shutdown.DrainTimeout = -1 }, ""},
		{"shutdown.timeout not above drain", "shutdown.timeout", func(c *Config) { c.Shutdown.Timeout = c.Shutdown.DrainTimeout }, "shutdown.drain_timeout"},
		{"shutdown.timeout zero", "shutdown.timeout", func(c *Config) { c.Shutdown.DrainTimeout = 0; c.Shutdown.Timeout = 0 }, ""},
		{"log.level", "log.level", func(c *Config) { c.Log.Level = "verbose" }, "debug, info, warn, error"},
		{"log.level upper case", "log.level", func(c *Config) { c.Log.Level = "INFO" }, ""},
		{"log.format", "log.format", func(c *Config) { c.Log.Format = "xml" }, "auto, json, text"},
		{"telemetry.protocol", "telemetry.protocol", func(c *Config) { c.Telemetry.Protocol = "http" }, "http/protobuf"},
		{"telemetry.sample_ratio above 1", "telemetry.sample_ratio", func(c *Config) { c.Telemetry.SampleRatio = 1.5 }, ""},
		{"telemetry.sample_ratio negative", "telemetry.sample_ratio", func(c *Config) { c.Telemetry.SampleRatio = -0.1 }, ""},
		{"lifecycle.authorize_timeout zero", "lifecycle.authorize_timeout", func(c *Config) { c.Lifecycle.AuthorizeTimeout = 0 }, "greater than 0"},
		{"lifecycle.authorize_failure", "lifecycle.authorize_failure", func(c *Config) { c.Lifecycle.AuthorizeFailure = "retry" }, "deny, allow"},
		{"lifecycle.refresh_interval negative", "lifecycle.refresh_interval", func(c *Config) { c.Lifecycle.RefreshInterval = -time.Second }, ""},
		{"lifecycle.refresh_interval below 100ms", "lifecycle.refresh_interval", func(c *Config) { c.Lifecycle.RefreshInterval = 30 * time.Millisecond }, "at least 100ms"},
		{"auth.mode", "auth.mode", func(c *Config) { c.Auth.Mode = "oauth" }, "none, jwt"},
		{"auth.mode jwt without a key", "auth.mode", func(c *Config) { c.Auth.Mode = "jwt" }, "auth.jwt_secret"},
		{"auth.jwt_secret without jwt mode", "auth.jwt_secret", func(c *Config) { c.Auth.JWTSecret = "s3cret" }, `auth.mode = "jwt"`},
		{"auth.jwt_public_keys without jwt mode", "auth.jwt_public_keys", func(c *Config) { c.Auth.JWTPublicKeys = []string{testPublicKey} }, `auth.mode = "jwt"`},
		{"auth.jwt_public_keys not PEM", "auth.jwt_public_keys", func(c *Config) { c.Auth.Mode = "jwt"; c.Auth.JWTPublicKeys = []string{"ssh-rsa AAAA"} }, "element 0: is not PEM"},
		{"auth.jwt_public_keys private key", "auth.jwt_public_keys", func(c *Config) { c.Auth.Mode = "jwt"; c.Auth.JWTPublicKeys = []string{testPublicKey, testPrivateKey} }, "element 1: is a \"EC PRIVATE KEY\""},
		{"auth.jwt_public_keys two in one", "auth.jwt_public_keys", func(c *Config) { c.Auth.Mode = "jwt"; c.Auth.JWTPublicKeys = []string{testPublicKey + testPublicKey} }, "one key per element"},
		{"auth.jwt_public_keys garbage in PEM", "auth.jwt_public_keys", func(c *Config) {
			c.Auth.Mode = "jwt"
			c.Auth.JWTPublicKeys = []string{"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"}
		}, "does not parse"},
		{"auth.jwks_url without jwt mode", "auth.jwks_url", func(c *Config) { c.Auth.JWKSURL = "https://auth.example/jwks" }, `auth.mode = "jwt"`},
		{"auth.jwks_url scheme", "auth.jwks_url", func(c *Config) { c.Auth.Mode = "jwt"; c.Auth.JWKSURL = "ftp://auth.example/jwks" }, "https://"},
		{"auth.jwks_url relative", "auth.jwks_url", func(c *Config) { c.Auth.Mode = "jwt"; c.Auth.JWKSURL = "/jwks.json" }, ""},
		{"auth.jwks_refresh zero", "auth.jwks_refresh", func(c *Config) { c.Auth.JWKSRefresh = 0 }, ""},
		{"auth.leeway negative", "auth.leeway", func(c *Config) { c.Auth.Leeway = -time.Second }, ""},
		{"routes[0].match empty", "routes[0].match", routes(Route{Exchange: "x"}), "required"},
		{"routes[0].match bad character", "routes[0].match", routes(Route{Match: "billing/pay"}), `"billing/pay"`},
		{"routes[0].match $ not first", "routes[0].match", routes(Route{Match: "a$b"}), `"$" only as its first`},
		{"routes[0].match ***", "routes[0].match", routes(Route{Match: "a.***"}), `"**"`},
		{"routes[1].match duplicate", "routes[1].match", routes(Route{Match: "billing.*"}, Route{Match: "billing.*"}), "routes[0].match \"billing.*\" is the same pattern"},
		{"routes[1].match after a glob that takes it", "routes[1].match", routes(Route{Match: "billing.*"}, Route{Match: "billing.pay"}), "unreachable"},
		{"routes[2].match after **", "routes[2].match", routes(Route{Match: "$connect"}, Route{Match: "**"}, Route{Match: "a.?"}), "routes[1].match \"**\""},
		{"routes[0].exchange bad character", "routes[0].exchange", routes(Route{Match: "a", Exchange: "bill ing"}), `"bill ing"`},
		{"routes[0].exchange too long", "routes[0].exchange", routes(Route{Match: "a", Exchange: strings.Repeat("x", 256)}), "255"},
		{"routes[0].exchange default declared", "routes[0].exchange", routes(Route{Match: "a", Declare: true, Type: "topic"}), "default exchange"},
		{"routes[0].exchange amq. declared", "routes[0].exchange", routes(Route{Match: "a", Exchange: "amq.topic", Declare: true, Type: "topic"}), "declare = false"},
		{"routes[0].type", "routes[0].type", routes(Route{Match: "a", Exchange: "x", Declare: true, Type: "x-delayed"}), "topic, direct, fanout, headers"},
		{"routes[0].type without declare", "routes[0].type", routes(Route{Match: "a", Exchange: "x", Type: "Topic"}), ""},
		{"routes[0].routing_key {token}", "routes[0].routing_key", routes(Route{Match: "a", RoutingKey: "{method}.{token}"}), "must not use {token}: session ids must not reach"},
		{"routes[0].routing_key unknown placeholder", "routes[0].routing_key", routes(Route{Match: "a", RoutingKey: "{id}"}), `"{id}"`},
		{"routes[0].routing_key unclosed", "routes[0].routing_key", routes(Route{Match: "a", RoutingKey: "x.{method"}), `"{" without "}"`},
		{"routes[0].routing_key stray }", "routes[0].routing_key", routes(Route{Match: "a", RoutingKey: "x}"}), `"}" without "{"`},
		{"routes[0].routing_key too long", "routes[0].routing_key", routes(Route{Match: "a", RoutingKey: strings.Repeat("k", 256) + "{method}"}), "255"},
		{"routes[0].timeout negative", "routes[0].timeout", routes(Route{Match: "a", Timeout: -time.Second}), `route match "a"`},
		{"routes[0].rate negative", "routes[0].rate", routes(Route{Match: "a", Rate: -1}), ""},
		{"routes[0].rate infinite", "routes[0].rate", routes(Route{Match: "a", Rate: math.Inf(1)}), "finite"},
		{"routes[0].burst negative", "routes[0].burst", routes(Route{Match: "a", Burst: -1}), ""},
		{"routes[0].max_payload_bytes negative", "routes[0].max_payload_bytes", routes(Route{Match: "a", MaxPayloadBytes: -1}), ""},
		{"routes[0].queue on the default exchange", "routes[0].queue", routes(Route{Match: "a", Queue: "jobs", QueueType: "classic", BindingKey: "k"}), "needs a non-empty exchange"},
		{"routes[0].queue_type unknown", "routes[0].queue_type", routes(Route{Match: "a", Exchange: "x", Type: "topic", Queue: "jobs", QueueType: "stream", BindingKey: "#"}), "classic, quorum"},
		{"routes[0].binding_key without queue", "routes[0].binding_key", routes(Route{Match: "a", Exchange: "x", BindingKey: "#"}), "needs queue"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.fn(&c)
			err := c.Validate()
			if err == nil {
				t.Fatal("Validate: no error")
			}
			msg := err.Error()
			if !strings.Contains(msg, "config: "+tt.key+": ") {
				t.Errorf("error %q does not name %s", msg, tt.key)
			}
			if !strings.Contains(msg, tt.want) {
				t.Errorf("error %q does not contain %q", msg, tt.want)
			}
			if strings.Contains(msg, "s3cret") {
				t.Errorf("error %q shows the password", msg)
			}
			if n := strings.Count(msg, "\n") + 1; n != 1 {
				t.Errorf("%d errors, want 1: %q", n, msg)
			}
		})
	}

	t.Run("valid", func(t *testing.T) {
		for _, c := range []Config{
			valid(),
			with(func(c *Config) {
				c.Node.ID = "n1"
				c.Auth.Mode = "jwt"
				c.Auth.JWTSecret = "s3cret-of-at-least-some-length"
				c.Auth.JWTPublicKeys = []string{testPublicKey}
				c.Auth.JWKSURL = "http://127.0.0.1:8081/.well-known/jwks.json"
				c.Auth.Leeway = 0
				c.Lifecycle.Authorize = true
				c.Lifecycle.AuthorizeFailure = "allow"
				c.Lifecycle.RefreshInterval = time.Second
				c.Routes = []Route{
					{Match: "billing.*", Exchange: "billing", RoutingKey: "{method}", Declare: true, Type: "topic", Durable: true, Timeout: 5 * time.Second},
					{Match: "billing.**", Exchange: "billing-all", RoutingKey: "{node}.{method}"},
					{Match: "$connect", Exchange: "", RoutingKey: "lifecycle"},
					{Match: "$presence", Exchange: "amq.topic", RoutingKey: ""},
					{Match: "chat:room-?", Exchange: "chat", RoutingKey: "chat", Declare: true, Type: "fanout", Rate: 0.5, Burst: 1, MaxPayloadBytes: 1024},
					{Match: "**", Exchange: "rest", Type: "headers"},
					{Match: "$disconnect", Exchange: "x"}, // "**" does not take $ methods
				}
			}),
			with(func(c *Config) {
				c.Node.ID = strings.Repeat("Z", 64)
				c.WS.RatePerSecond, c.WS.RateBurst = 0, 0
				c.WS.MaxConnections = 0
				c.AMQP.URL = "amqps://user:p%40ss@broker.example:5671/%2F"
				c.AMQP.InQueueExpires = 0
				c.AMQP.Heartbeat = 0
				c.Shutdown.DrainTimeout = 0
				c.Telemetry.Protocol = "http/protobuf"
				c.Telemetry.SampleRatio = 0
			}),
		} {
			if err := c.Validate(); err != nil {
				t.Errorf("Validate(%+v): %v", c, err)
			}
		}
	})

	t.Run("every key is validated", func(t *testing.T) {
		// Keys whose every value is acceptable.
		free := []string{
			"http.host", "telemetry.service_name", "telemetry.endpoint",
			"routing.default_route", "lifecycle.connect", "lifecycle.disconnect", "lifecycle.authorize",
			"auth.issuer", "auth.audience", "reload.watch",
			"routes[].declare", "routes[].durable",
		}
		var tested []string
		for _, tt := range tests {
			// routes[1].match counts for routes[].match.
			tested = append(tested, routeIndex.ReplaceAllString(tt.key, "routes[]"))
		}
		keys := []string{}
		for _, f := range fields() {
			keys = append(keys, f.key)
		}
		for _, name := range routeFields() {
			keys = append(keys, "routes[]."+name)
		}
		for _, key := range keys {
			if !slices.Contains(tested, key) && !slices.Contains(free, key) {
				t.Errorf("no failing Validate case for %s", key)
			}
		}
	})

	t.Run("all problems are reported", func(t *testing.T) {
		c := Config{}
		err := c.Validate()
		if err == nil {
			t.Fatal("Validate(Config{}): no error")
		}
		for _, key := range []string{"node.id", "http.port", "ws.max_message_bytes", "amqp.url", "log.level", "telemetry.protocol"} {
			if !strings.Contains(err.Error(), "config: "+key+": ") {
				t.Errorf("error does not name %s:\n%v", key, err)
			}
		}
	})
}

func TestRedacted(t *testing.T) {
	c := valid()
	c.AMQP.URL = "amqp://piped:s3cret@broker:5672/vh"
	r := c.Redacted()

	amqp, ok := r["amqp"].(map[string]any)
	if !ok {
		t.Fatalf("Redacted()[\"amqp\"] = %#v", r["amqp"])
	}
	if got, want := amqp["url"], "amqp://piped:xxxxx@broker:5672/vh"; got != want {
		t.Errorf("amqp.url = %v, want %v", got, want)
	}
	if got := r["ws"].(map[string]any)["ping_interval"]; got != "25s" {
		t.Errorf("ws.ping_interval = %#v, want \"25s\"", got)
	}
	if got := r["node"].(map[string]any)["id"]; got != "node-1" {
		t.Errorf("node.id = %#v", got)
	}
	for _, f := range fields() {
		if _, ok := r[f.section].(map[string]any)[f.name]; !ok {
			t.Errorf("Redacted lacks %s", f.key)
		}
	}

	js, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var logged bytes.Buffer
	slog.New(slog.NewTextHandler(&logged, nil)).Info("config", "config", c, "ptr", &c)
	for what, s := range map[string]string{"fmt": fmt.Sprint(r), "json": string(js), "slog": logged.String()} {
		if strings.Contains(s, "s3cret") {
			t.Errorf("%s output shows the password: %s", what, s)
		}
		if !strings.Contains(s, "xxxxx") {
			t.Errorf("%s output lacks the redacted URL: %s", what, s)
		}
	}
	if !strings.Contains(logged.String(), "config.amqp.prefetch=512") {
		t.Errorf("slog output: %s", logged.String())
	}

	// Changing the map does not change the Config.
	r["ws"].(map[string]any)["allowed_origins"].([]string)[0] = "changed"
	if c.WS.AllowedOrigins[0] != "*" {
		t.Error("Redacted shares the allowed_origins slice")
	}

	for _, raw := range []string{
		"amqp://u:s3cret@h:5672/",
		"u:s3cret@h:5672",
		"amqp://u:s3c ret@h/",
		"amqp://u:12/s3cret@h/",
		"amqp://u:12?s3cret@h/",
		"amqp://u:s3cret%zz@h/",
		"amqp://:s3cret@h/",
	} {
		c.AMQP.URL = raw
		if got := c.Redacted()["amqp"].(map[string]any)["url"].(string); strings.Contains(got, "s3cret") {
			t.Errorf("Redacted amqp.url %q = %q", raw, got)
		}
	}
	if (*Config)(nil).Redacted() != nil {
		t.Error("nil Config: Redacted not nil")
	}
}

// TestExample loads piped.toml.example: it must hold every key at its
// default, so it cannot drift from Defaults.
func TestExample(t *testing.T) {
	const path = "../piped.toml.example"
	got, err := Load([]string{"--config", path, "--nodeId", "n1"}, nil, io.Discard)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := with(func(c *Config) { c.Node.ID = "n1" })
	if !reflect.DeepEqual(*got, want) {
		t.Errorf("piped.toml.example:\n got %+v\nwant %+v", *got, want)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}

	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := toml.Parser().Unmarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	flat, _ := maps.Flatten(raw, nil, ".")
	for _, f := range fields() {
		_, ok := flat[f.key]
		switch {
		case f.key == "node.id":
			if ok {
				t.Error("piped.toml.example sets node.id; it must be commented out")
			}
			if !strings.Contains(string(b), "\n# id = ") {
				t.Error("piped.toml.example lacks the commented-out node.id")
			}
		case !ok:
			t.Errorf("piped.toml.example lacks %s", f.key)
		}
	}
}

// TestDocs checks that docs/config.md lists every key and its variable.
func TestDocs(t *testing.T) {
	b, err := os.ReadFile("../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, f := range fields() {
		for _, s := range []string{"`" + f.key + "`", "`" + f.env() + "`"} {
			if !strings.Contains(doc, s) {
				t.Errorf("docs/config.md lacks %s", s)
			}
		}
	}
}

func TestFields(t *testing.T) {
	all := fields()
	if len(all) == 0 {
		t.Fatal("no fields")
	}
	seen := map[string]bool{}
	for _, f := range all {
		if seen[f.env()] {
			t.Errorf("duplicate variable %s", f.env())
		}
		seen[f.env()] = true
		if got := envKey(f.env()); got != f.key {
			t.Errorf("envKey(%s) = %s, want %s", f.env(), got, f.key)
		}
		if f.env() == envConfig {
			t.Errorf("%s collides with %s", f.key, envConfig)
		}
	}
	for name, key := range map[string]string{
		"PIPED_AMQP_URL":             "amqp.url",
		"PIPED_WS_MAX_MESSAGE_BYTES": "ws.max_message_bytes",
		"PIPED_REQUESTS_TIMEOUT":     "requests.timeout",
		"PIPED_NODE_ID":              "node.id",
	} {
		if got := envKey(name); got != key {
			t.Errorf("envKey(%s) = %s, want %s", name, got, key)
		}
	}
}

func TestFlyMachineIDIsTheDefaultNodeID(t *testing.T) {
	t.Chdir(t.TempDir())
	for _, tc := range []struct {
		name    string
		args    []string
		environ []string
		want    string
	}{
		{"fly only", nil, []string{"FLY_MACHINE_ID=3d8d9e1c"}, "3d8d9e1c"},
		{"flag wins", []string{"--nodeId", "7"}, []string{"FLY_MACHINE_ID=3d8d9e1c"}, "7"},
		{"env wins", nil, []string{"FLY_MACHINE_ID=3d8d9e1c", "PIPED_NODE_ID=eu-1"}, "eu-1"},
		{"neither", nil, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load(tc.args, tc.environ, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if c.Node.ID != tc.want {
				t.Fatalf("node.id %q, want %q", c.Node.ID, tc.want)
			}
		})
	}
}

func TestFlyRegionIsTheDefaultRegion(t *testing.T) {
	t.Chdir(t.TempDir())
	for _, tc := range []struct {
		name    string
		environ []string
		want    string
	}{
		{"fly only", []string{"FLY_REGION=ams"}, "ams"},
		{"env wins", []string{"FLY_REGION=ams", "PIPED_NODE_REGION=eu-west-1"}, "eu-west-1"},
		{"neither", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load(nil, tc.environ, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if c.Node.Region != tc.want {
				t.Fatalf("node.region %q, want %q", c.Node.Region, tc.want)
			}
		})
	}
}

func TestFile(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	tests := []struct {
		name      string
		cwdFile   bool
		args, env []string
		want      string
	}{
		{"none", false, nil, nil, ""},
		{"./piped.toml", true, nil, nil, "piped.toml"},
		{"--config", true, []string{"--nodeId", "1", "--config", "/etc/piped.toml"}, []string{"PIPED_CONFIG=env.toml"}, "/etc/piped.toml"},
		{"PIPED_CONFIG", true, nil, []string{"PIPED_CONFIG=a.toml", "PIPED_CONFIG=env.toml"}, "env.toml"},
		{"empty --config", true, []string{"--config="}, nil, ""},
		{"empty PIPED_CONFIG", true, nil, []string{"PIPED_CONFIG="}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			os.Remove(filepath.Join(dir, "piped.toml"))
			if tt.cwdFile {
				if err := os.WriteFile(filepath.Join(dir, "piped.toml"), nil, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			got, err := File(tt.args, tt.env)
			if err != nil || got != tt.want {
				t.Errorf("File = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
	if _, err := File([]string{"-h"}, nil); !errors.Is(err, ErrHelp) {
		t.Errorf("File(-h): %v, want ErrHelp", err)
	}
	if _, err := File([]string{"--prot"}, nil); err == nil {
		t.Error("File(--prot): no error")
	}
}
