package reload

import (
	"os"
	"reflect"
	"slices"
	"strings"

	"github.com/piped-dev/piped/config"
)

// runtimeKeys are the keys a reload applies; every other key needs a
// restart. Keep in step with applied and docs/config.md.
var runtimeKeys = []string{
	"routes", "routing.default_route", "requests.timeout",
	"ws.rate_per_second", "ws.rate_burst", "ws.max_inflight", "ws.max_connections",
}

// restartOnly returns the keys (koanf names, such as "amqp.url") whose
// value differs between old and new and that a reload does not apply.
// Only names are returned, never values: some are secrets.
//
// A local minimal version of config.RestartOnly (the config package's
// own, once it is there, replaces it).
func restartOnly(old, new *config.Config) []string {
	var out []string
	diff(reflect.ValueOf(*old), reflect.ValueOf(*new), "", &out)
	return slices.DeleteFunc(out, func(k string) bool { return slices.Contains(runtimeKeys, k) })
}

// diff appends the keys of the leaves that differ between a and b, structs
// of the same type; lists count as one leaf.
func diff(a, b reflect.Value, prefix string, out *[]string) {
	t := a.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		name := f.Tag.Get("koanf")
		if name == "" || !f.IsExported() {
			continue
		}
		key := prefix + name
		fa, fb := a.Field(i), b.Field(i)
		if fa.Kind() == reflect.Struct && f.Type.PkgPath() == t.PkgPath() {
			diff(fa, fb, key+".", out)
			continue
		}
		if !reflect.DeepEqual(fa.Interface(), fb.Interface()) {
			*out = append(*out, key)
		}
	}
}

// FileOf returns the configuration file a node started with args and
// environ reads, as config.Load chooses it: --config, else PIPED_CONFIG,
// else ./piped.toml when it exists; "" for none. It is what reload.watch
// watches. (A local minimal version until the config package tells.)
func FileOf(args, environ []string) string {
	for i, a := range args {
		switch {
		case a == "--config" || a == "-config":
			if i+1 < len(args) {
				return args[i+1]
			}
		case strings.HasPrefix(a, "--config="):
			return strings.TrimPrefix(a, "--config=")
		case strings.HasPrefix(a, "-config="):
			return strings.TrimPrefix(a, "-config=")
		}
	}
	file, found := "", false
	for _, kv := range environ { // the last one wins, as in config.Load
		if v, ok := strings.CutPrefix(kv, "PIPED_CONFIG="); ok {
			file, found = v, true
		}
	}
	if found {
		return file
	}
	if _, err := os.Stat("piped.toml"); err == nil {
		return "piped.toml"
	}
	return ""
}
