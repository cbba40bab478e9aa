package config

import (
	"log/slog"
	"net/url"
	"strings"
	"time"
)

// redactedURL replaces a URL that cannot be redacted piecewise.
const redactedURL = "xxxxx"

// Redacted returns the configuration as it is safe to log: a map from each
// section name to a map from key name to value, with the names of the TOML
// file (r["amqp"].(map[string]any)["prefetch"]), and under "routes" a
// []map[string]any with one map per route. Durations are strings such as
// "30s", lists are copies, amqp.url and each element of amqp.urls have
// their password replaced by "xxxxx" (the whole URL is replaced when it
// does not parse) and a non-empty auth.jwt_secret is "xxxxx".
func (c *Config) Redacted() map[string]any {
	if c == nil {
		return nil
	}
	out := map[string]any{}
	for _, f := range fields() {
		sec, ok := out[f.section].(map[string]any)
		if !ok {
			sec = map[string]any{}
			out[f.section] = sec
		}
		sec[f.name] = loggable(f, c)
	}
	out[routesKey] = loggableRoutes(c.Routes)
	return out
}

// LogValue makes a Config log, through log/slog, as Redacted: one group per
// section, in declaration order, and never the AMQP password. It has a value
// receiver so that both Config and *Config values log safely.
func (c Config) LogValue() slog.Value {
	all := fields()
	var groups []slog.Attr
	for _, sec := range sections(all) {
		var attrs []slog.Attr
		for _, f := range all {
			if f.section == sec {
				attrs = append(attrs, slog.Any(f.name, loggable(f, &c)))
			}
		}
		groups = append(groups, slog.Attr{Key: sec, Value: slog.GroupValue(attrs...)})
	}
	groups = append(groups, slog.Any(routesKey, loggableRoutes(c.Routes)))
	return slog.GroupValue(groups...)
}

// loggableRoutes returns the routes as maps from key to value, with
// durations as strings. Routes hold no secrets.
func loggableRoutes(routes []Route) []map[string]any {
	out := make([]map[string]any, 0, len(routes))
	for _, r := range routes {
		out = append(out, map[string]any{
			"match":             r.Match,
			"exchange":          r.Exchange,
			"routing_key":       r.RoutingKey,
			"declare":           r.Declare,
			"type":              r.Type,
			"durable":           r.Durable,
			"timeout":           r.Timeout.String(),
			"rate":              r.Rate,
			"burst":             r.Burst,
			"max_payload_bytes": r.MaxPayloadBytes,
			"queue":             r.Queue,
			"queue_type":        r.QueueType,
			"binding_key":       r.BindingKey,
		})
	}
	return out
}

// loggable returns the value of f in c as it is safe and readable to log.
func loggable(f field, c *Config) any {
	v := f.value(c)
	switch x := v.(type) {
	case time.Duration:
		return x.String()
	case []string:
		if f.key == "amqp.urls" {
			for i, u := range x { // x is a copy (field.value)
				x[i] = RedactURL(u)
			}
		}
	case string:
		switch {
		case !isSecret(f.key):
		case f.key == "amqp.url":
			return RedactURL(x)
		case x != "":
			return redactedURL // not a URL: nothing of it is safe to show
		}
	}
	return v
}

// RedactURL returns raw as it is safe to log or put in an error: with the
// password replaced by "xxxxx" (url.URL's Redacted), or all of it replaced by
// "xxxxx" when it does not parse as a URL with a scheme whose user info is
// where it belongs — in "user:pass@host" the password would pass as opaque
// data or a path, and in "amqp://user:12/pass@host" (an unescaped "/") as the
// path. The query's values are replaced by "xxxxx" too (keys stay): a
// JWKS URL may carry an access token there. The empty string stays empty.
// It is the one redactor of URLs in Piped.
func RedactURL(raw string) string {
	if raw == "" {
		return ""
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.Opaque != "" || strayAt(u) {
		return redactedURL
	}
	if u.RawQuery != "" {
		q, err := url.ParseQuery(u.RawQuery)
		if err != nil {
			return redactedURL
		}
		for k := range q {
			q[k] = []string{redactedURL}
		}
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}

// strayAt reports whether an "@" appears after the authority of u, the sign
// of user info with an unescaped "/", "?" or "#" that url.Parse split.
func strayAt(u *url.URL) bool {
	return strings.Contains(u.Path, "@") || strings.Contains(u.RawQuery, "@") || strings.Contains(u.Fragment, "@")
}
