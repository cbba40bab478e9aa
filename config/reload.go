package config

import (
	"reflect"
	"slices"
)

// runtimeKeys are the keys a reload (SIGHUP, or a file change with
// reload.watch) applies to a running node; docs/config.md lists them under
// "What a reload changes". Every other key takes effect only at the next
// start.
var runtimeKeys = []string{
	routesKey,
	"routing.default_route",
	"requests.timeout",
	"ws.rate_per_second",
	"ws.rate_burst",
	"ws.max_inflight",
	"ws.max_connections",
	"lifecycle.refresh_interval",
	"log.level",
}

// RuntimeKeys returns the keys a reload applies without a restart, in the
// order docs/config.md lists them. The slice is the caller's.
func RuntimeKeys() []string { return slices.Clone(runtimeKeys) }

// RestartOnly returns the keys whose values differ between old and new and
// that a reload cannot apply (every key not in RuntimeKeys), in declaration
// order; nil when a reload applies all of new. A reload that gets a
// non-empty list applies the runtime keys and says which keys wait for a
// restart. Neither Config is changed.
func RestartOnly(old, new *Config) []string {
	var out []string
	for _, f := range fields() {
		if slices.Contains(runtimeKeys, f.key) {
			continue
		}
		if !reflect.DeepEqual(f.value(old), f.value(new)) {
			out = append(out, f.key)
		}
	}
	return out
}
