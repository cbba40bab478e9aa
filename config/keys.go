package config

import (
	"fmt"
	"reflect"
	"strings"
	"time"
)

// envPrefix starts every environment variable Load reads.
const envPrefix = "PIPED_"

// envConfig names the configuration file, like --config; it is not a key.
const envConfig = envPrefix + "CONFIG"

// isSecret reports whether the value of key may hold a secret: such values
// are redacted by Redacted and never echoed in errors.
func isSecret(key string) bool {
	return key == "amqp.url" || key == "amqp.urls" || key == "auth.jwt_secret"
}

// routesKey is the key of the route list, [[routes]] in TOML.
const routesKey = "routes"

// isDuration reports whether t is time.Duration, which is read from strings
// such as "30s" rather than from integers.
func isDuration(t reflect.Type) bool { return t == reflect.TypeFor[time.Duration]() }

// field is one leaf key of Config: "section.name", as in the TOML file.
type field struct {
	key     string       // e.g. "ws.max_message_bytes"
	section string       // e.g. "ws"
	name    string       // e.g. "max_message_bytes"
	index   []int        // path to the field from Config, for FieldByIndex
	typ     reflect.Type // the Go type of the field
}

// env is the environment variable that sets the key, e.g.
// PIPED_WS_MAX_MESSAGE_BYTES.
func (f field) env() string { return envName(f.key) }

// envName maps a key to its environment variable: the section and the key,
// upper-cased and joined by the first underscore after the prefix.
func envName(key string) string {
	return envPrefix + strings.ToUpper(strings.Replace(key, ".", "_", 1))
}

// envKey maps an environment variable (with the prefix) to its key: the first
// underscore after the prefix separates the section from the key, since
// section names have no underscore. A name without a second part maps to a
// key without a section, which is never known.
func envKey(name string) string {
	rest := strings.ToLower(strings.TrimPrefix(name, envPrefix))
	section, key, ok := strings.Cut(rest, "_")
	if !ok {
		return rest
	}
	return section + "." + key
}

// fields lists every scalar key of Config (the keys the environment can
// set) in declaration order; lists of tables such as [[routes]] are not
// among them (see routeFields). Sections are structs holding leaves of the
// supported types. It
// panics on a field without a koanf tag or of a type Load cannot parse,
// which is a programming error caught by the tests.
func fields() []field {
	var out []field
	ct := reflect.TypeFor[Config]()
	for i := range ct.NumField() {
		sf := ct.Field(i)
		section := sf.Tag.Get("koanf")
		if sf.Type.Kind() == reflect.Slice && sf.Type.Elem().Kind() == reflect.Struct {
			continue // [[routes]]: not a flat key; loaded from the file only
		}
		if section == "" || sf.Type.Kind() != reflect.Struct || strings.Contains(section, "_") {
			panic(fmt.Sprintf("config: section field Config.%s needs a koanf tag without underscore and a struct type", sf.Name))
		}
		for j := range sf.Type.NumField() {
			lf := sf.Type.Field(j)
			name := lf.Tag.Get("koanf")
			if name == "" {
				panic(fmt.Sprintf("config: field Config.%s.%s has no koanf tag", sf.Name, lf.Name))
			}
			if !supported(lf.Type) {
				panic(fmt.Sprintf("config: field Config.%s.%s has unsupported type %s", sf.Name, lf.Name, lf.Type))
			}
			out = append(out, field{
				key:     section + "." + name,
				section: section,
				name:    name,
				index:   []int{i, j},
				typ:     lf.Type,
			})
		}
	}
	return out
}

// fieldsByKey indexes fs by key.
func fieldsByKey(fs []field) map[string]field {
	m := make(map[string]field, len(fs))
	for _, f := range fs {
		m[f.key] = f
	}
	return m
}

// isEnvKey reports whether key is one the environment can set.
func isEnvKey(key string) bool {
	_, ok := fieldsByKey(fields())[key]
	return ok
}

// routeFields lists the keys of one route ("match", "exchange", …) in
// declaration order.
func routeFields() []string {
	rt := reflect.TypeFor[Route]()
	out := make([]string, 0, rt.NumField())
	for i := range rt.NumField() {
		out = append(out, rt.Field(i).Tag.Get("koanf"))
	}
	return out
}

// fieldByTag returns the field of struct type t whose koanf tag is name.
func fieldByTag(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		if sf := t.Field(i); sf.Tag.Get("koanf") == name {
			return sf, true
		}
	}
	return reflect.StructField{}, false
}

// suggestTag returns the koanf tag of struct type t within two edits of
// name, or "".
func suggestTag(name string, t reflect.Type) string {
	best, bestDist := "", 3
	for i := range t.NumField() {
		tag := t.Field(i).Tag.Get("koanf")
		if d := editDistance(name, tag); d < bestDist {
			best, bestDist = tag, d
		}
	}
	return best
}

// supported reports whether parseText and fileProblem handle type t.
func supported(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.String, reflect.Bool, reflect.Float32, reflect.Float64,
		reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return true
	case reflect.Slice:
		return t.Elem().Kind() == reflect.String
	}
	return false
}

// value returns the value of f in c, with slices copied.
func (f field) value(c *Config) any {
	v := reflect.ValueOf(c).Elem().FieldByIndex(f.index)
	if v.Kind() == reflect.Slice {
		if v.IsNil() {
			return reflect.MakeSlice(v.Type(), 0, 0).Interface()
		}
		cp := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
		reflect.Copy(cp, v)
		return cp.Interface()
	}
	return v.Interface()
}

// sections returns the section names in declaration order.
func sections(fs []field) []string {
	var out []string
	for _, f := range fs {
		if len(out) == 0 || out[len(out)-1] != f.section {
			out = append(out, f.section)
		}
	}
	return out
}

// suggest returns the known key closest to an unknown one, or "" when none
// is close: a key within two edits, else the only key with the same name in
// another section.
func suggest(unknown string, fs []field) string {
	best, bestDist := "", 3
	for _, f := range fs {
		if d := editDistance(unknown, f.key); d < bestDist {
			best, bestDist = f.key, d
		}
	}
	if best != "" {
		return best
	}
	leaf := unknown[strings.LastIndexByte(unknown, '.')+1:]
	for _, f := range fs {
		if f.name == leaf {
			if best != "" {
				return ""
			}
			best = f.key
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
