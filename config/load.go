package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/knadh/koanf/maps"
	"github.com/knadh/koanf/parsers/toml/v2"
	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/v2"
	"github.com/spf13/pflag"
)

// defaultFile is read when neither --config nor PIPED_CONFIG is given and it
// exists, relative to the working directory.
const defaultFile = "piped.toml"

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
// name starts with "piped" (PIPED_SERVICE_HOST, PIPED_PORT=tcp://…). Only the
// flags actually given override the lower sources.
//
// Unknown keys and values of the wrong type are errors naming the key and
// where it was set. Load does not call Validate.
//
// When -h or --help is given, Load prints the usage text to usage (os.Stderr
// if nil) and returns ErrHelp.
func Load(args []string, environ []string, usage io.Writer) (*Config, error) {
	all := fields()
	byKey := make(map[string]field, len(all))
	for _, f := range all {
		byKey[f.key] = f
	}

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
		return nil, fmt.Errorf("config: unexpected argument %q: piped takes only flags (see --help)", flags.Arg(0))
	}

	var errs []error
	envLayer, envFile, err := readEnv(environ, all, byKey)
	if err != nil {
		errs = append(errs, err)
	}
	flagLayer, err := readFlags(flags, byKey)
	if err != nil {
		errs = append(errs, err)
	}
	fileLayer := map[string]any{}
	path, origin, err := configFile(flags, envFile)
	if err != nil {
		errs = append(errs, err)
	} else if path != "" {
		if fileLayer, err = readFile(path, origin, all, byKey); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	defaults := Defaults()
	defaultLayer := make(map[string]any, len(all))
	for _, f := range all {
		defaultLayer[f.key] = f.value(&defaults)
	}

	// Every layer is flat and already holds values of the field types, so
	// the decoder needs no hooks; ErrorUnused and ErrorUnset only guard
	// against this file and the Config struct disagreeing.
	k := koanf.New(".")
	for _, layer := range []map[string]any{defaultLayer, fileLayer, envLayer, flagLayer} {
		if err := k.Load(confmap.Provider(layer, "."), nil); err != nil {
			return nil, fmt.Errorf("config: merging sources: %w", err)
		}
	}
	var c Config
	err = k.UnmarshalWithConf("", &c, koanf.UnmarshalConf{
		DecoderConfig: &mapstructure.DecoderConfig{TagName: "koanf", ErrorUnused: true, ErrorUnset: false},
	})
	if err != nil {
		return nil, fmt.Errorf("config: decoding the merged configuration: %w", err)
	}
	if c.Node.ID == "" {
		// On Fly.io every machine has a unique, stable id: use it unless
		// node.id was set, so one image serves every machine and region.
		c.Node.ID = lookupEnv(environ, "FLY_MACHINE_ID")
	}
	return &c, nil
}

// lookupEnv returns the value of name in environ, or "".
func lookupEnv(environ []string, name string) string {
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, name+"="); ok {
			return v
		}
	}
	return ""
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
			"environment variable (PIPED_AMQP_URL sets amqp.url). Flags win over the\n"+
			"environment, which wins over the file. See docs/config.md.\n")
	}
	return set
}

// readFlags returns the keys set by the flags given on the command line.
func readFlags(flags *pflag.FlagSet, byKey map[string]field) (map[string]any, error) {
	var errs []error
	a, b := flags.Lookup(flagNodeIDOrig), flags.Lookup(flagNodeID)
	if a.Changed && b.Changed && a.Value.String() != b.Value.String() {
		errs = append(errs, fmt.Errorf("config: --%s %q and --%s %q disagree; give only one",
			flagNodeIDOrig, a.Value.String(), flagNodeID, b.Value.String()))
	}
	layer := map[string]any{}
	flags.Visit(func(fl *pflag.Flag) {
		key := flagKey(fl.Name)
		if key == "" {
			return
		}
		v, problem := convert(fl.Value.String(), byKey[key].typ, true, isSecret(key))
		if problem != "" {
			errs = append(errs, keyError(key, problem, "from --"+fl.Name))
			return
		}
		layer[key] = v
	})
	return layer, errors.Join(errs...)
}

// envFile is what PIPED_CONFIG says about the configuration file.
type envFile struct {
	path string
	set  bool
}

// readEnv returns the keys set by PIPED_* variables in environ, and
// PIPED_CONFIG. When a variable appears twice, the later one wins.
func readEnv(environ []string, all []field, byKey map[string]field) (map[string]any, envFile, error) {
	var (
		errs  []error
		file  envFile
		layer = map[string]any{}
	)
	for _, kv := range environ {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, envPrefix) {
			continue
		}
		if name == envConfig {
			file = envFile{path: value, set: true}
			continue
		}
		key := envKey(name)
		f, ok := byKey[key]
		if !ok {
			if kubernetesServiceLink(name, value) {
				continue
			}
			msg := fmt.Sprintf("config: unknown environment variable %s (it would set key %q)", name, key)
			if s := suggest(key, all); s != "" {
				msg += fmt.Sprintf("; did you mean %s?", envName(s))
			}
			errs = append(errs, errors.New(msg))
			continue
		}
		v, problem := convert(value, f.typ, true, isSecret(key))
		if problem != "" {
			errs = append(errs, keyError(key, problem, "from "+name))
			continue
		}
		layer[key] = v
	}
	return layer, file, errors.Join(errs...)
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

// readFile returns the keys set by the TOML file at path.
func readFile(path, origin string, all []field, byKey map[string]field) (map[string]any, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		// The path error would repeat the path; keep only its reason.
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		from := ""
		if origin != "" {
			from = " (from " + origin + ")"
		}
		return nil, fmt.Errorf("config: reading %s%s: %w", path, from, err)
	}
	raw, err := toml.Parser().Unmarshal(b)
	if err != nil {
		// Only the short message and the position: the human-readable form
		// of a go-toml error quotes the line, which may hold a password.
		var pe interface{ Position() (row, column int) }
		if errors.As(err, &pe) {
			row, col := pe.Position()
			return nil, fmt.Errorf("config: %s:%d:%d: %w", path, row, col, err)
		}
		return nil, fmt.Errorf("config: %s: %w", path, err)
	}

	flat, _ := maps.Flatten(raw, nil, ".")
	keys := make([]string, 0, len(flat))
	for key := range flat {
		keys = append(keys, key)
	}
	slices.Sort(keys)

	sectionNames := sections(all)
	var errs []error
	layer := map[string]any{}
	for _, key := range keys {
		v := flat[key]
		f, ok := byKey[key]
		if !ok {
			if slices.Contains(sectionNames, key) {
				if tbl, isTable := v.(map[string]any); isTable && len(tbl) == 0 {
					continue // an empty [section]
				}
				// The value is not shown: it may be a misplaced amqp.url.
				errs = append(errs, fmt.Errorf("config: %s must be a table ([%s]), got %s in %s", key, key, describe(v, true), path))
				continue
			}
			msg := fmt.Sprintf("config: unknown key %q in %s", key, path)
			if s := suggest(key, all); s != "" {
				msg += fmt.Sprintf("; did you mean %q?", s)
			}
			errs = append(errs, errors.New(msg))
			continue
		}
		val, problem := convert(v, f.typ, false, isSecret(key))
		if problem != "" {
			errs = append(errs, keyError(key, problem, "in "+path))
			continue
		}
		layer[key] = val
	}
	return layer, errors.Join(errs...)
}

// keyError reports a value that cannot be used for key.
func keyError(key, problem, where string) error {
	return fmt.Errorf("config: %s: %s (%s)", key, problem, where)
}

const durationHint = `use a Go duration such as "30s", "250ms" or "1h30m"`

// convert returns raw as a value of type t, or else a description of what is
// wrong with it. Text values (environment, flags) are strings parsed as t
// needs; lists are comma-separated. TOML values must already have a
// matching type: integers for integers, strings for strings and durations,
// numbers for floats, arrays of strings for lists. Values of secret keys are
// never echoed.
func convert(raw any, t reflect.Type, text, secret bool) (any, string) {
	var v any
	if text {
		s := raw.(string)
		switch k := t.Kind(); {
		case k == reflect.String:
			v = s
		case k == reflect.Slice:
			v = splitList(s)
		case isDuration(t):
			d, err := time.ParseDuration(strings.TrimSpace(s))
			if err != nil {
				return nil, fmt.Sprintf("invalid duration %s; %s", quote(s, secret), durationHint)
			}
			v = d
		case k == reflect.Bool:
			b, err := strconv.ParseBool(strings.TrimSpace(s))
			if err != nil {
				return nil, fmt.Sprintf("invalid boolean %s; use true or false", quote(s, secret))
			}
			v = b
		case k >= reflect.Int && k <= reflect.Int64:
			n, err := strconv.ParseInt(strings.TrimSpace(s), 10, t.Bits())
			if errors.Is(err, strconv.ErrRange) {
				return nil, fmt.Sprintf("integer %s is out of range", quote(s, secret))
			} else if err != nil {
				return nil, fmt.Sprintf("invalid integer %s", quote(s, secret))
			}
			v = n
		case k == reflect.Float32 || k == reflect.Float64:
			x, err := strconv.ParseFloat(strings.TrimSpace(s), t.Bits())
			if err != nil || math.IsInf(x, 0) || math.IsNaN(x) {
				return nil, fmt.Sprintf("invalid number %s", quote(s, secret))
			}
			v = x
		}
	} else {
		wrong := func(want string) (any, string) {
			return nil, fmt.Sprintf("expected %s, got %s", want, describe(raw, secret))
		}
		switch k := t.Kind(); {
		case isDuration(t):
			s, ok := raw.(string)
			if !ok {
				return wrong(`a duration string such as "30s"`)
			}
			d, err := time.ParseDuration(s)
			if err != nil {
				return nil, fmt.Sprintf("invalid duration %s; %s", quote(s, secret), durationHint)
			}
			v = d
		case k == reflect.String:
			s, ok := raw.(string)
			if !ok {
				if _, isInt := raw.(int64); isInt && !secret {
					return wrong(fmt.Sprintf("a string (quote it: \"%v\")", raw))
				}
				return wrong("a string")
			}
			v = s
		case k == reflect.Bool:
			b, ok := raw.(bool)
			if !ok {
				return wrong("true or false")
			}
			v = b
		case k >= reflect.Int && k <= reflect.Int64:
			n, ok := raw.(int64)
			if !ok {
				return wrong("an integer")
			}
			if reflect.New(t).Elem().OverflowInt(n) {
				return nil, fmt.Sprintf("integer %d is out of range", n)
			}
			v = n
		case k == reflect.Float32 || k == reflect.Float64:
			switch x := raw.(type) {
			case float64:
				if math.IsInf(x, 0) || math.IsNaN(x) {
					return nil, fmt.Sprintf("expected a finite number, got %v", x)
				}
				v = x
			case int64:
				v = float64(x)
			default:
				return wrong("a number")
			}
		case k == reflect.Slice:
			list, ok := raw.([]any)
			if !ok {
				return wrong(`an array of strings such as ["a", "b"]`)
			}
			out := make([]string, len(list))
			for i, e := range list {
				s, ok := e.(string)
				if !ok {
					return nil, fmt.Sprintf("element %d: expected a string, got %s", i, describe(e, secret))
				}
				out[i] = s
			}
			v = out
		}
	}
	return reflect.ValueOf(v).Convert(t).Interface(), ""
}

// splitList splits a comma-separated list, trimming spaces and dropping
// empty elements: "a, b," is [a b] and "" is empty.
func splitList(s string) []string {
	out := []string{}
	for e := range strings.SplitSeq(s, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}

// quote quotes a value for an error message, shortened, or hides it.
func quote(s string, secret bool) string {
	if secret {
		return "(value hidden)"
	}
	const maxLen = 64
	if len(s) > maxLen {
		return strconv.Quote(s[:maxLen]) + "…"
	}
	return strconv.Quote(s)
}

// describe names the type of a TOML value, with the value unless secret.
func describe(v any, secret bool) string {
	var article, kind, val string
	switch x := v.(type) {
	case string:
		article, kind, val = "a", "string", quote(x, false)
	case int64:
		article, kind, val = "an", "integer", strconv.FormatInt(x, 10)
	case float64:
		article, kind, val = "a", "float", strconv.FormatFloat(x, 'g', -1, 64)
	case bool:
		article, kind, val = "a", "boolean", strconv.FormatBool(x)
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	default:
		return "a date/time"
	}
	if secret {
		return article + " " + kind
	}
	return kind + " " + val
}
