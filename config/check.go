package config

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/knadh/koanf/maps"
)

// The checks after loading: koanf's providers read the sources as they are
// (TOML values typed by the parser, environment values as strings); these
// functions compare what they read with the Config struct and report every
// unknown key and every value of the wrong type, naming the key and where it
// was set. Only then is the merged configuration decoded.

// checkFile checks the tree the TOML parser read from path.
func checkFile(raw map[string]any, path string) []error {
	var errs []error
	all := fields()
	ct := reflect.TypeFor[Config]()
	for _, name := range sortedKeys(raw) {
		v := raw[name]
		sf, ok := fieldByTag(ct, name)
		if !ok {
			errs = append(errs, unknownFileKeys(name, v, path, all)...)
			continue
		}
		if sf.Type.Kind() == reflect.Struct {
			tbl, ok := v.(map[string]any)
			if !ok {
				// The value is not shown: it may be a misplaced amqp.url.
				errs = append(errs, fmt.Errorf("config: %s must be a table ([%s]), got %s in %s", name, name, describe(v, true), path))
				continue
			}
			errs = append(errs, checkTable(name, tbl, sf.Type, path, all)...)
			continue
		}
		errs = append(errs, checkValue(name, v, sf.Type, path, all)...)
	}
	return errs
}

// checkTable checks the keys of a TOML table decoded into a struct of type
// t; prefix is the table's own key ("ws", "routes[1]").
func checkTable(prefix string, tbl map[string]any, t reflect.Type, path string, all []field) []error {
	var errs []error
	for _, name := range sortedKeys(tbl) {
		key := prefix + "." + name
		sf, ok := fieldByTag(t, name)
		if !ok {
			if strings.Contains(prefix, "[") {
				// Inside a list of tables: the suggestion is a key of the
				// same element.
				msg := "unknown key"
				if s := suggestTag(name, t); s != "" {
					msg += fmt.Sprintf(" (did you mean %s.%s?)", prefix, s)
				}
				errs = append(errs, keyError(key, msg, "in "+path))
				continue
			}
			errs = append(errs, unknownFileKeys(key, tbl[name], path, all)...)
			continue
		}
		errs = append(errs, checkValue(key, tbl[name], sf.Type, path, all)...)
	}
	return errs
}

// checkValue checks one TOML value for a field of type t.
func checkValue(key string, v any, t reflect.Type, path string, all []field) []error {
	switch {
	case t.Kind() == reflect.Struct && !isDuration(t):
		tbl, ok := v.(map[string]any)
		if !ok {
			return []error{keyError(key, "expected a table, got "+describe(v, isSecret(key)), "in "+path)}
		}
		return checkTable(key, tbl, t, path, all)
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct:
		list, ok := v.([]any)
		if !ok {
			return []error{keyError(key, fmt.Sprintf("expected a list of tables ([[%s]]), got %s", key, describe(v, true)), "in "+path)}
		}
		var errs []error
		for i, e := range list {
			ekey := fmt.Sprintf("%s[%d]", key, i)
			tbl, ok := e.(map[string]any)
			if !ok {
				errs = append(errs, keyError(ekey, "expected a table, got "+describe(e, true), "in "+path))
				continue
			}
			errs = append(errs, checkTable(ekey, tbl, t.Elem(), path, all)...)
		}
		return errs
	case t.Kind() == reflect.Map && t.Key().Kind() == reflect.String:
		tbl, ok := v.(map[string]any)
		if !ok {
			return []error{keyError(key, "expected a table, got "+describe(v, isSecret(key)), "in "+path)}
		}
		var errs []error
		for _, name := range sortedKeys(tbl) {
			errs = append(errs, checkValue(key+"."+name, tbl[name], t.Elem(), path, all)...)
		}
		return errs
	}
	if problem := fileProblem(v, t, isSecret(key)); problem != "" {
		return []error{keyError(key, problem, "in "+path)}
	}
	return nil
}

// unknownFileKeys reports an unknown key of the file; when its value is a
// table, each key below it is reported.
func unknownFileKeys(key string, v any, path string, all []field) []error {
	var keys []string
	if tbl, ok := v.(map[string]any); ok {
		flat, _ := maps.Flatten(tbl, []string{key}, ".")
		keys = sortedKeys(flat)
	} else {
		keys = []string{key}
	}
	errs := make([]error, 0, len(keys))
	for _, k := range keys {
		msg := fmt.Sprintf("config: unknown key %q in %s", k, path)
		if s := suggest(k, all); s != "" {
			msg += fmt.Sprintf("; did you mean %q?", s)
		}
		errs = append(errs, errors.New(msg))
	}
	return errs
}

// checkEnv checks the PIPED_* variables loadEnv read, in order: each must
// name a key the environment can set, with a value of its type.
func checkEnv(vars []envVar) []error {
	all := fields()
	byKey := fieldsByKey(all)
	var errs []error
	for _, ev := range vars {
		f, ok := byKey[ev.key]
		if !ok {
			if ev.key == routesKey || strings.HasPrefix(ev.key, routesKey+".") {
				errs = append(errs, fmt.Errorf("config: %s cannot be set from the environment: [[routes]] come from the configuration file only", ev.name))
				continue
			}
			msg := fmt.Sprintf("config: unknown environment variable %s (it would set key %q)", ev.name, ev.key)
			if s := suggest(ev.key, all); s != "" {
				msg += fmt.Sprintf("; did you mean %s?", envName(s))
			}
			errs = append(errs, errors.New(msg))
			continue
		}
		if _, problem := parseText(ev.value, f.typ, isSecret(ev.key)); problem != "" {
			errs = append(errs, keyError(ev.key, problem, "from "+ev.name))
		}
	}
	return errs
}

// keyError reports a value that cannot be used for key.
func keyError(key, problem, where string) error {
	return fmt.Errorf("config: %s: %s (%s)", key, problem, where)
}

const durationHint = `use a Go duration such as "30s", "250ms" or "1h30m"`

// parseText returns s, a value from the environment or a flag, as a value
// of type t, or else a description of what is wrong with it. Lists are
// comma-separated. Values of secret keys are never echoed. The decoder hooks
// use it too, so the check and the decoding cannot disagree.
func parseText(s string, t reflect.Type, secret bool) (any, string) {
	var v any
	switch k := t.Kind(); {
	case k == reflect.String:
		v = s
	case k == reflect.Slice && t.Elem().Kind() == reflect.String:
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
	default:
		return nil, "cannot be set from text"
	}
	return reflect.ValueOf(v).Convert(t).Interface(), ""
}

// fileProblem describes what is wrong with raw, a value of the TOML parser,
// for a field of type t, or returns "". TOML values must already have a
// matching type: integers for integers, strings for strings and durations,
// numbers for floats, arrays of strings for lists.
func fileProblem(raw any, t reflect.Type, secret bool) string {
	wrong := func(want string) string {
		return fmt.Sprintf("expected %s, got %s", want, describe(raw, secret))
	}
	switch k := t.Kind(); {
	case isDuration(t):
		s, ok := raw.(string)
		if !ok {
			return wrong(`a duration string such as "30s"`)
		}
		if _, err := time.ParseDuration(s); err != nil {
			return fmt.Sprintf("invalid duration %s; %s", quote(s, secret), durationHint)
		}
	case k == reflect.String:
		if _, ok := raw.(string); !ok {
			if _, isInt := raw.(int64); isInt && !secret {
				return wrong(fmt.Sprintf("a string (quote it: \"%v\")", raw))
			}
			return wrong("a string")
		}
	case k == reflect.Bool:
		if _, ok := raw.(bool); !ok {
			return wrong("true or false")
		}
	case k >= reflect.Int && k <= reflect.Int64:
		n, ok := raw.(int64)
		if !ok {
			return wrong("an integer")
		}
		if reflect.New(t).Elem().OverflowInt(n) {
			return fmt.Sprintf("integer %d is out of range", n)
		}
	case k == reflect.Float32 || k == reflect.Float64:
		switch x := raw.(type) {
		case float64:
			if math.IsInf(x, 0) || math.IsNaN(x) {
				return fmt.Sprintf("expected a finite number, got %v", x)
			}
		case int64:
		default:
			return wrong("a number")
		}
	case k == reflect.Slice && t.Elem().Kind() == reflect.String:
		list, ok := raw.([]any)
		if !ok {
			return wrong(`an array of strings such as ["a", "b"]`)
		}
		for i, e := range list {
			if _, ok := e.(string); !ok {
				return fmt.Sprintf("element %d: expected a string, got %s", i, describe(e, secret))
			}
		}
	default:
		return fmt.Sprintf("unsupported type %s", t) // a programming error; TestFields catches it
	}
	return ""
}

// textHook returns a mapstructure decoder hook converting strings (from
// the environment) to the types accepted by match, with parseText.
func textHook(match func(t reflect.Type) bool) mapstructure.DecodeHookFuncType {
	return func(from, to reflect.Type, data any) (any, error) {
		if from.Kind() != reflect.String || !match(to) {
			return data, nil
		}
		v, problem := parseText(data.(string), to, true)
		if problem != "" {
			return nil, errors.New(problem)
		}
		return v, nil
	}
}

// textDurationHook decodes "30s" into a time.Duration.
func textDurationHook() mapstructure.DecodeHookFuncType { return textHook(isDuration) }

// textListHook decodes "a, b," into []string{"a", "b"}.
func textListHook() mapstructure.DecodeHookFuncType {
	return textHook(func(t reflect.Type) bool { return t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.String })
}

// textScalarHook decodes booleans, integers and floats from strings.
func textScalarHook() mapstructure.DecodeHookFuncType {
	return textHook(func(t reflect.Type) bool {
		switch k := t.Kind(); {
		case isDuration(t):
			return false
		case k == reflect.Bool, k >= reflect.Int && k <= reflect.Int64, k == reflect.Float32, k == reflect.Float64:
			return true
		}
		return false
	})
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

// sortedKeys returns the keys of m in order, so errors come in a stable order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
