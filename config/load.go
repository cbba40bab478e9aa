package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"

	"github.com/go-viper/mapstructure/v2"
	"github.com/knadh/koanf/parsers/toml/v2"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/providers/posflag"
	"github.com/knadh/koanf/providers/structs"
	"github.com/knadh/koanf/v2"
	"github.com/spf13/pflag"
)

// defaultFile is read when neither --config nor PIPED_CONFIG is given and it
// exists, relative to the working directory.
const defaultFile = "piped.toml"

// jwtTokenMaxLength is ws.token_max_length in jwt mode when the user did not
// set it: real JWTs are longer than session ids.
const jwtTokenMaxLength = 4096

// The command-line flags.
const (
	flagConfig     = "config"
	flagNodeID     = "node-id"
	flagNodeIDOrig = "nodeId" // the original Node.js program's spelling
	flagPort       = "port"
	flagAMQPURL    = "amqp-url"
	flagLogLevel   = "log-level"
)

// flagKey returns the key a flag sets, or "" for a flag that sets none.
func flagKey(name string) string {
	switch name {
	case flagNodeID, flagNodeIDOrig:
		return "node.id"
	case flagPort:
		return "http.port"
	case flagAMQPURL:
		return "amqp.url"
	case flagLogLevel:
		return "log.level"
	}
	return ""
}

// Load builds the configuration from, later sources winning: Defaults() ←
// TOML file ← environment ← flags.
//
// args are the command-line arguments without the program name; environ is
// like os.Environ(). The TOML file is the --config flag's value, else the
// PIPED_CONFIG variable's, else ./piped.toml when it exists (looked up
// relative to the working directory), else none; an empty --config or
// PIPED_CONFIG means no file. A named file that does not exist is an error.
//
// Environment variables are PIPED_<SECTION>_<KEY> for the key section.key
// (PIPED_WS_MAX_MESSAGE_BYTES sets ws.max_message_bytes); an unknown PIPED_*
// variable is an error, except those Kubernetes defines for a Service whose
// name starts with "piped" (PIPED_SERVICE_HOST, PIPED_PORT=tcp://…). Lists of
// tables ([[routes]]) come from the file only. Only the flags actually given
// override the lower sources.
//
// Each source is loaded by its koanf provider and then checked: unknown keys
// and values of the wrong type are errors naming the key and where it was
// set. The merged sources are decoded into a Config with mapstructure
// decoder hooks; then each route gets its defaults (routing_key "{method}",
// durable true, type "topic" when declared) and, in jwt mode,
// ws.token_max_length becomes 4096 unless a source set it. Load does not
// call Validate.
//
// When -h or --help is given, Load prints the usage text to usage (os.Stderr
// if nil) and returns ErrHelp.
func Load(args []string, environ []string, usage io.Writer) (*Config, error) {
	flags := newFlagSet(usage)
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) { // -h or --help
			flags.Usage()
			return nil, ErrHelp
		}
		if s := suggestFlag(flags, err); s != "" {
			return nil, fmt.Errorf("config: %w; did you mean --%s? (see --help)", err, s)
		}
		return nil, fmt.Errorf("config: %w (see --help)", err)
	}
	if flags.NArg() > 0 {
		// Not echoed: a stray argument may be a secret that lost its flag.
		return nil, fmt.Errorf("config: %d unexpected argument(s), the first of %d bytes: piped takes only flags (see --help)", flags.NArg(), len(flags.Arg(0)))
	}

	var errs []error
	envK, envVars, envFile, err := loadEnv(environ)
	if err != nil {
		errs = append(errs, err)
	}
	flagK, err := loadFlags(flags)
	if err != nil {
		errs = append(errs, err)
	}
	fileK := koanf.New(".")
	path, origin, err := configFile(flags, envFile)
	if err != nil {
		errs = append(errs, err)
	} else if path != "" {
		if fileK, err = loadFile(path, origin); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	// The checks after loading: what koanf read must fit Config, or the
	// error says which key of which source is wrong.
	errs = append(errs, checkFile(fileK.Raw(), path)...)
	errs = append(errs, checkEnv(envVars)...)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	// user holds what the sources set, without the defaults, so that
	// Exists tells a key the user set from one left at its default.
	user := koanf.New(".")
	for _, layer := range []*koanf.Koanf{fileK, envK, flagK} {
		if err := user.Merge(layer); err != nil {
			return nil, fmt.Errorf("config: merging sources: %w", err)
		}
	}
	k := koanf.New(".")
	if err := k.Load(structs.Provider(Defaults(), "koanf"), nil); err != nil {
		return nil, fmt.Errorf("config: loading the defaults: %w", err)
	}
	if err := k.Merge(user); err != nil {
		return nil, fmt.Errorf("config: merging sources: %w", err)
	}

	var c Config
	err = k.UnmarshalWithConf("", &c, koanf.UnmarshalConf{
		DecoderConfig: &mapstructure.DecoderConfig{
			TagName:     "koanf",
			ErrorUnused: true, // the checks above refuse unknown keys; this guards against them and Config disagreeing
			DecodeHook: mapstructure.ComposeDecodeHookFunc(
				textDurationHook(),
				textListHook(),
				textScalarHook(),
			),
		},
	})
	if err != nil {
		// Not reached when the checks pass; the message names no value.
		return nil, fmt.Errorf("config: decoding the merged configuration: %w", err)
	}

	if len(c.Routes) == 0 {
		c.Routes = nil // no [[routes]], however the sources spelled "none"
	}
	applyRouteDefaults(c.Routes, fileK)
	if c.Auth.Mode == "jwt" && !user.Exists("ws.token_max_length") {
		c.WS.TokenMaxLength = jwtTokenMaxLength
	}
	if c.Node.ID == "" {
		// On Fly.io every machine has a unique, stable id: use it unless
		// node.id was set, so one image serves every machine and region.
		c.Node.ID = lookupEnv(environ, "FLY_MACHINE_ID")
	}
	if c.Node.Region == "" {
		// Likewise the machine's region (ams, iad, …).
		c.Node.Region = lookupEnv(environ, "FLY_REGION")
	}
	return &c, nil
}

// applyRouteDefaults gives each route the defaults of the keys its table in
// the file left out: routing_key "{method}", durable true, type "topic"
// when it declares its exchange without a type, and for a route with a
// queue, queue_type "classic" and binding_key "#" on a topic exchange (""
// otherwise: Validate then asks for it where "" would take no call). An
// explicit routing_key = "" stays empty.
func applyRouteDefaults(routes []Route, fileK *koanf.Koanf) {
	raw, _ := fileK.Get("routes").([]any)
	for i := range routes {
		tbl, _ := raw[i].(map[string]any) // checkFile made them tables
		r := &routes[i]
		if _, ok := tbl["routing_key"]; !ok {
			r.RoutingKey = "{method}"
		}
		if _, ok := tbl["durable"]; !ok {
			r.Durable = true
		}
		if r.Declare && r.Type == "" {
			r.Type = "topic"
		}
		if r.Queue != "" {
			if r.QueueType == "" {
				r.QueueType = QueueClassic
			}
			if _, ok := tbl["binding_key"]; !ok && r.Type == "topic" {
				r.BindingKey = "#"
			}
		}
	}
}

// lookupEnv returns the value of name in environ, or "".
func lookupEnv(environ []string, name string) string {
	v := ""
	for _, kv := range environ {
		if s, ok := strings.CutPrefix(kv, name+"="); ok {
			v = s // the later one wins, as for every variable
		}
	}
	return v
}

// suggestFlag returns the name of the flag that an unknown flag in err was
// probably meant to be: one differing only in case (--nodeid for --nodeId),
// else the closest within an edit distance of 2; "" when none is close or
// err is not about an unknown flag. A long name given with one dash (-nodeId,
// which pflag reads as shorthands) is matched as a long name.
func suggestFlag(flags *pflag.FlagSet, err error) string {
	var ne *pflag.NotExistError
	if !errors.As(err, &ne) {
		return ""
	}
	name := ne.GetSpecifiedName()
	if sh := ne.GetSpecifiedShortnames(); len(sh) > 1 {
		name = sh
	}
	name = strings.ToLower(strings.TrimLeft(name, "-"))
	best, bestDist := "", 3
	flags.VisitAll(func(f *pflag.Flag) {
		if f.Hidden {
			return
		}
		d := editDistance(name, strings.ToLower(f.Name))
		if d == 0 {
			d = -1 // same but for case: always the one meant
		}
		if d < bestDist {
			best, bestDist = f.Name, d
		}
	})
	return best
}

// newFlagSet defines Load's flags. Flag defaults are zero and never used:
// only flags given on the command line are read. -h and --help make Parse
// stop with an error wrapping pflag.ErrHelp.
func newFlagSet(usage io.Writer) *pflag.FlagSet {
	d := Defaults()
	set := pflag.NewFlagSet("piped", pflag.ContinueOnError)
	set.SetOutput(usage)
	set.SortFlags = false
	set.String(flagConfig, "", "read the TOML configuration from `FILE` (default: $PIPED_CONFIG, else ./piped.toml if it exists)")
	set.String(flagNodeID, "", "this node's unique `ID`, which names its queues and exchanges (node.id; required)")
	set.String(flagNodeIDOrig, "", "same as --node-id `ID` (the original Piped's spelling)")
	set.Int(flagPort, 0, fmt.Sprintf("HTTP `PORT` to listen on (http.port; default %d)", d.HTTP.Port))
	set.String(flagAMQPURL, "", fmt.Sprintf("broker `URL` (amqp.url; default %s); a password here is visible to local users, prefer PIPED_AMQP_URL", RedactURL(d.AMQP.URL)))
	set.String(flagLogLevel, "", fmt.Sprintf("log `LEVEL`: debug, info, warn or error (log.level; default %s)", d.Log.Level))
	set.BoolFuncP("help", "h", "print this help and exit", func(string) error { return pflag.ErrHelp })
	set.Usage = func() {
		w := set.Output()
		fmt.Fprint(w, "Usage: piped [flags]\n\nPiped is a WebSocket to RabbitMQ gateway.\n\nFlags:\n")
		fmt.Fprint(w, set.FlagUsages())
		fmt.Fprint(w, "\nEvery setting can also be given in the TOML file or as a PIPED_<SECTION>_<KEY>\n"+
			"environment variable (PIPED_AMQP_URL sets amqp.url); [[routes]] only in the file.\n"+
			"Flags win over the environment, which wins over the file. See docs/config.md.\n")
	}
	return set
}

// loadFlags loads the flags given on the command line with koanf's posflag
// provider: with no koanf instance to consult, it takes only the flags that
// were given, under the keys they set (--nodeId and --node-id both set
// node.id, so they must agree).
func loadFlags(flags *pflag.FlagSet) (*koanf.Koanf, error) {
	a, b := flags.Lookup(flagNodeIDOrig), flags.Lookup(flagNodeID)
	if a.Changed && b.Changed && a.Value.String() != b.Value.String() {
		return nil, fmt.Errorf("config: --%s %q and --%s %q disagree; give only one",
			flagNodeIDOrig, a.Value.String(), flagNodeID, b.Value.String())
	}
	k := koanf.New(".")
	p := posflag.ProviderWithFlag(flags, ".", nil, func(f *pflag.Flag) (string, any) {
		return flagKey(f.Name), posflag.FlagVal(flags, f)
	})
	if err := k.Load(p, nil); err != nil {
		return nil, fmt.Errorf("config: reading flags: %w", err)
	}
	return k, nil
}

// envFile is what PIPED_CONFIG says about the configuration file.
type envFile struct {
	path string
	set  bool
}

// envVar is one PIPED_* variable and the key its name maps to.
type envVar struct{ name, key, value string }

// loadEnv loads the PIPED_* variables of environ with koanf's env provider,
// each under the key its name maps to, as the strings they are (checkEnv
// checks them, the decoder hooks convert them). It returns every variable
// read, in order, and what PIPED_CONFIG says. Variables that set no key are
// left out of the koanf instance (checkEnv reports them), as are Kubernetes
// service links. When a variable appears twice, the later one wins.
func loadEnv(environ []string) (*koanf.Koanf, []envVar, envFile, error) {
	var (
		file envFile
		vars []envVar
	)
	k := koanf.New(".")
	p := env.Provider(".", env.Opt{
		Prefix:      envPrefix,
		EnvironFunc: func() []string { return environ },
		TransformFunc: func(name, value string) (string, any) {
			switch {
			case name == envConfig:
				file = envFile{path: value, set: true}
				return "", nil
			case kubernetesServiceLink(name, value) && !isEnvKey(envKey(name)):
				return "", nil
			}
			key := envKey(name)
			vars = append(vars, envVar{name: name, key: key, value: value})
			if !isEnvKey(key) {
				return "", nil
			}
			return key, value
		},
	})
	if err := k.Load(p, nil); err != nil {
		return nil, nil, file, fmt.Errorf("config: reading the environment: %w", err)
	}
	return k, vars, file, nil
}

// kubernetesServiceLink reports whether an environment variable is one that
// Kubernetes injects into every pod of a namespace for each Service
// (enableServiceLinks, on by default). For a Service named "piped" they are
// PIPED_SERVICE_HOST, PIPED_SERVICE_PORT, PIPED_SERVICE_PORT_<NAME>,
// PIPED_PORT=tcp://…, PIPED_PORT_<N>_TCP and PIPED_PORT_<N>_TCP_{PROTO,PORT,ADDR};
// a Service "piped-x" gives PIPED_X_SERVICE_HOST and so on. Refusing them
// would keep Piped from starting next to its own Service.
func kubernetesServiceLink(name, value string) bool {
	parts := strings.Split(strings.TrimPrefix(name, envPrefix), "_")
	for i, p := range parts {
		tail := parts[i+1:]
		switch p {
		case "SERVICE":
			if len(tail) == 1 && tail[0] == "HOST" || len(tail) >= 1 && tail[0] == "PORT" {
				return true
			}
		case "PORT":
			if len(tail) == 0 {
				return strings.HasPrefix(value, "tcp://") || strings.HasPrefix(value, "udp://") || strings.HasPrefix(value, "sctp://")
			}
			if len(tail) >= 2 && isDigits(tail[0]) && slices.Contains([]string{"TCP", "UDP", "SCTP"}, tail[1]) &&
				(len(tail) == 2 || len(tail) == 3 && slices.Contains([]string{"PROTO", "PORT", "ADDR"}, tail[2])) {
				return true
			}
		}
	}
	return false
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// File returns the configuration file Load reads for these args and
// environ, as Load names it (relative paths stay relative to the working
// directory), or "" when it reads none. A reload's file watch uses it. The
// args must parse, as for Load; -h yields ErrHelp.
func File(args, environ []string) (string, error) {
	flags := newFlagSet(io.Discard)
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return "", ErrHelp
		}
		return "", fmt.Errorf("config: %w (see --help)", err)
	}
	var env envFile
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, envConfig+"="); ok {
			env = envFile{path: v, set: true}
		}
	}
	path, _, err := configFile(flags, env)
	return path, err
}

// configFile returns the configuration file to read and which source named
// it ("" for the implicit ./piped.toml), or "" when there is none.
func configFile(flags *pflag.FlagSet, env envFile) (path, origin string, err error) {
	if fl := flags.Lookup(flagConfig); fl.Changed {
		return fl.Value.String(), "--" + flagConfig, nil
	}
	if env.set {
		return env.path, envConfig, nil
	}
	switch _, err := os.Stat(defaultFile); {
	case err == nil:
		return defaultFile, "", nil
	case errors.Is(err, fs.ErrNotExist):
		return "", "", nil
	default:
		return "", "", fmt.Errorf("config: %w", err)
	}
}

// loadFile loads the TOML file at path with koanf's file provider and TOML
// parser.
func loadFile(path, origin string) (*koanf.Koanf, error) {
	k := koanf.New(".")
	err := k.Load(file.Provider(path), toml.Parser())
	if err == nil {
		return k, nil
	}
	var pe *fs.PathError
	if errors.As(err, &pe) || errors.Is(err, fs.ErrNotExist) {
		// The path error would repeat the path; keep only its reason.
		if pe != nil {
			err = pe.Err
		}
		from := ""
		if origin != "" {
			from = " (from " + origin + ")"
		}
		return nil, fmt.Errorf("config: reading %s%s: %w", path, from, err)
	}
	// Only the short message and the position: the human-readable form of a
	// go-toml error quotes the line, which may hold a password.
	var pos interface{ Position() (row, column int) }
	if errors.As(err, &pos) {
		row, col := pos.Position()
		return nil, fmt.Errorf("config: %s:%d:%d: %w", path, row, col, err)
	}
	return nil, fmt.Errorf("config: %s: %w", path, err)
}
