package config

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math"
	"net/url"
	"strings"
	"time"
)

// Limits on the keys of issue 8.
const (
	minRefreshInterval = 100 * time.Millisecond // "1" or "10ns" is a typo; tests use a few hundred ms
	maxRoutingKeyLen   = 255                    // AMQP short string
)

// The routing_key placeholders.
const (
	placeholderMethod = "{method}"
	placeholderNode   = "{node}"
	placeholderToken  = "{token}"
)

// exchangeTypes are the exchange types a route may declare.
var exchangeTypes = []string{"topic", "direct", "fanout", "headers"}

// validateLifecycle checks [lifecycle].
func validateLifecycle(v *validator, l Lifecycle) {
	v.positive("lifecycle.authorize_timeout", l.AuthorizeTimeout)
	v.oneOf("lifecycle.authorize_failure", l.AuthorizeFailure, "deny", "allow")
	if r := l.RefreshInterval; r < 0 || r > 0 && r < minRefreshInterval {
		v.add("lifecycle.refresh_interval", "must be 0 (no $presence notices) or at least %v, got %v", minRefreshInterval, r)
	}
}

// validateAuth checks [auth]. The secret is never part of a message.
func validateAuth(v *validator, a Auth) {
	v.oneOf("auth.mode", a.Mode, "none", "jwt")
	switch a.Mode {
	case "jwt":
		if a.JWTSecret == "" && len(a.JWTPublicKeys) == 0 && a.JWKSURL == "" {
			v.add("auth.mode", `"jwt" needs a key: set auth.jwt_secret (HS256), auth.jwt_public_keys (RS256/ES256 PEM) or auth.jwks_url`)
		}
	case "none":
		// A key without mode = "jwt" would leave every token unchecked.
		for _, k := range []struct {
			key string
			set bool
		}{
			{"auth.jwt_secret", a.JWTSecret != ""},
			{"auth.jwt_public_keys", len(a.JWTPublicKeys) > 0},
			{"auth.jwks_url", a.JWKSURL != ""},
		} {
			if k.set {
				v.add(k.key, `is set but auth.mode is "none", so tokens are not checked; set auth.mode = "jwt" or remove it`)
			}
		}
	}
	for i, p := range a.JWTPublicKeys {
		if problem := checkPublicKey(p); problem != "" {
			v.add("auth.jwt_public_keys", "element %d: %s", i, problem)
		}
	}
	if a.JWKSURL != "" {
		u, err := url.Parse(a.JWKSURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			v.add("auth.jwks_url", "must be an http:// or https:// URL such as \"https://auth.example/.well-known/jwks.json\", got %s", quote(RedactURL(a.JWKSURL), false))
		}
	}
	v.positive("auth.jwks_refresh", a.JWKSRefresh)
	if a.Leeway < 0 {
		v.add("auth.leeway", "must be at least 0, got %v", a.Leeway)
	}
}

// checkPublicKey returns what is wrong with one PEM public key, or "": it
// must hold exactly one RSA or ECDSA public key (PUBLIC KEY, RSA PUBLIC KEY
// or a CERTIFICATE).
func checkPublicKey(s string) string {
	block, rest := pem.Decode([]byte(s))
	if block == nil {
		return `is not PEM; paste the whole "-----BEGIN PUBLIC KEY-----" block`
	}
	if strings.TrimSpace(string(rest)) != "" {
		return "holds more than one PEM block; give one key per element"
	}
	var key any
	var err error
	switch block.Type {
	case "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		var cert *x509.Certificate
		if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
			key = cert.PublicKey
		}
	default:
		return fmt.Sprintf("is a %q PEM block; want PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE (never a private key)", block.Type)
	}
	if err != nil {
		return fmt.Sprintf("does not parse: %v", err)
	}
	switch key.(type) {
	case *rsa.PublicKey, *ecdsa.PublicKey:
		return ""
	}
	return fmt.Sprintf("is a %T; want an RSA (RS256) or ECDSA (ES256) key", key)
}

// validateRoutes checks every route of [[routes]]; errors name the route's
// index and key, such as "routes[1].exchange".
func validateRoutes(v *validator, routes []Route) {
	for i, r := range routes {
		key := func(name string) string { return fmt.Sprintf("%s[%d].%s", routesKey, i, name) }
		at := "" // which route, for the keys other than match
		if r.Match != "" {
			at = fmt.Sprintf(" (route match %s)", quote(r.Match, false))
		}

		if problem := checkGlob(r.Match); problem != "" {
			v.add(key("match"), "%s", problem)
		} else {
			for j, e := range routes[:i] {
				if problem := shadows(e.Match, r.Match); problem != "" {
					v.add(key("match"), "%s is unreachable: routes[%d].match %s %s; the first match wins, so remove it or move it before routes[%d]",
						quote(r.Match, false), j, quote(e.Match, false), problem, j)
					break
				}
			}
		}

		switch x := r.Exchange; {
		case x == "" && r.Declare:
			v.add(key("exchange"), "the default exchange (\"\") cannot be declared; name an exchange or set declare = false%s", at)
		case !validAMQPName(x):
			v.add(key("exchange"), "must be at most %d characters from A-Z a-z 0-9 - _ . :, got %s%s", maxAMQPNameLen, quote(x, false), at)
		case r.Declare && strings.HasPrefix(x, reservedNamePrefix):
			v.add(key("exchange"), "cannot declare %s: names starting with %q are the broker's; use declare = false to publish to it%s", quote(x, false), reservedNamePrefix, at)
		}
		if r.Type != "" || r.Declare {
			v.oneOf(key("type"), r.Type, exchangeTypes...)
		}
		if problem := checkRoutingKey(r.RoutingKey); problem != "" {
			v.add(key("routing_key"), "%s%s", problem, at)
		}
		if r.Timeout < 0 {
			v.add(key("timeout"), "must be at least 0 (0 takes requests.timeout), got %v%s", r.Timeout, at)
		}
		switch x := r.Rate; {
		case math.IsNaN(x) || x < 0:
			v.add(key("rate"), "must be at least 0 (0: no limit of its own), got %v%s", x, at)
		case math.IsInf(x, 0):
			v.add(key("rate"), "must be finite (0: no limit of its own), got %v%s", x, at)
		}
		if r.Burst < 0 {
			v.add(key("burst"), "must be at least 0 (0: max(1, ceil(rate))), got %d%s", r.Burst, at)
		}
		if r.MaxPayloadBytes < 0 {
			v.add(key("max_payload_bytes"), "must be at least 0 (0: only ws.max_message_bytes), got %d%s", r.MaxPayloadBytes, at)
		}
		validateRouteQueue(v, routes, i, key, at)
	}
}

// validateRouteQueue checks queue, queue_type and binding_key of
// routes[i]; key names its keys and at says which route it is.
func validateRouteQueue(v *validator, routes []Route, i int, key func(string) string, at string) {
	r := routes[i]
	if r.Queue == "" {
		if r.QueueType != "" {
			v.add(key("queue_type"), "needs queue: it is the type of the queue the route declares, and the route declares none%s", at)
		}
		if r.BindingKey != "" {
			v.add(key("binding_key"), "needs queue: it binds the queue the route declares to its exchange, and the route declares none%s", at)
		}
		return
	}
	switch q := r.Queue; {
	case !validAMQPName(q):
		v.add(key("queue"), "must be at most %d characters from A-Z a-z 0-9 - _ . :, got %s%s", maxAMQPNameLen, quote(q, false), at)
	case strings.HasPrefix(q, reservedNamePrefix):
		v.add(key("queue"), "cannot declare %s: names starting with %q are the broker's%s", quote(q, false), reservedNamePrefix, at)
	case r.Exchange == "":
		v.add(key("queue"), "needs a non-empty exchange to bind %s to: the default exchange (\"\") takes no bindings%s", quote(q, false), at)
	}
	v.oneOf(key("queue_type"), r.QueueType, QueueClassic, QueueQuorum)
	for j, e := range routes[:i] {
		if e.Queue == r.Queue && e.QueueType != r.QueueType && e.QueueType != "" && r.QueueType != "" {
			v.add(key("queue_type"), "routes[%d] declares queue %s as %s; one queue has one type%s", j, quote(r.Queue, false), quote(e.QueueType, false), at)
			break
		}
	}
	switch b := r.BindingKey; {
	case len(b) > maxRoutingKeyLen:
		v.add(key("binding_key"), "is %d bytes long; AMQP allows at most %d%s", len(b), maxRoutingKeyLen, at)
	case b != "":
	case r.Type == "direct":
		v.add(key("binding_key"), "is required on a direct exchange: the routing key of the calls queue %s takes, such as %q%s", quote(r.Queue, false), "billing.pay", at)
	case r.Type == "" && !r.Declare && r.Exchange != "":
		v.add(key("binding_key"), "is required: the type of exchange %s is unknown (declare = false and no type); set type, which gives binding_key its default (\"#\" for topic), or binding_key%s", quote(r.Exchange, false), at)
	}
}

// validAMQPName reports whether s is a valid exchange name: AMQP 0-9-1's
// characters, at most 255 bytes. "" (the default exchange) is valid.
func validAMQPName(s string) bool {
	if len(s) > maxAMQPNameLen {
		return false
	}
	for i := range len(s) {
		switch b := s[i]; {
		case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9', b == '-', b == '_', b == '.', b == ':':
		default:
			return false
		}
	}
	return true
}

// checkGlob returns what is wrong with a route's match pattern, or "".
func checkGlob(p string) string {
	if p == "" {
		return `is required: an exact method name such as "billing.pay" or a glob such as "billing.*"`
	}
	for i := range len(p) {
		switch b := p[i]; {
		case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9',
			b == '_', b == '-', b == '.', b == ':', b == '*', b == '?':
		case b == '$':
			if i != 0 {
				return fmt.Sprintf(`may have "$" only as its first character (lifecycle methods such as "$connect"), got %s`, quote(p, false))
			}
		default:
			return fmt.Sprintf(`may hold only letters, digits and _ - . : $ * ? ("*": any run without ".", "?": one character but ".", "**": any run), got %s`, quote(p, false))
		}
	}
	if strings.Contains(p, "***") {
		return fmt.Sprintf(`has "***"; use "**" for any run of characters including ".", got %s`, quote(p, false))
	}
	return ""
}

// shadows returns how the earlier pattern e takes every method the later
// pattern l matches ("is the same pattern", "matches it", …), or "" when
// it may not. It finds the cases that are certain: the same pattern, a
// catch-all "**" (or "$**"), and an exact name the earlier glob matches.
func shadows(e, l string) string {
	switch {
	case e == l:
		return "is the same pattern"
	case e == "**" && !strings.HasPrefix(l, "$"), e == "$**" && strings.HasPrefix(l, "$"):
		return "matches every method it could match"
	case !strings.ContainsAny(l, "*?") && globMatch(e, l):
		return "matches it"
	}
	return ""
}

// globMatch reports whether the route pattern p matches method m: "*" is a
// run of characters other than ".", "?" one character other than ".", "**"
// any run; a method starting with "$" only matches a pattern starting with
// "$". The route package compiles patterns for the hot path; this is the
// plain definition, for Validate.
func globMatch(p, m string) bool {
	if strings.HasPrefix(m, "$") != strings.HasPrefix(p, "$") {
		return false
	}
	return globMatchFrom(p, m)
}

func globMatchFrom(p, m string) bool {
	for len(p) > 0 {
		switch {
		case strings.HasPrefix(p, "**"):
			rest := p[2:]
			for i := 0; i <= len(m); i++ {
				if globMatchFrom(rest, m[i:]) {
					return true
				}
			}
			return false
		case p[0] == '*':
			rest := p[1:]
			for i := 0; i <= len(m); i++ {
				if globMatchFrom(rest, m[i:]) {
					return true
				}
				if i < len(m) && m[i] == '.' {
					return false
				}
			}
			return false
		case p[0] == '?':
			if m == "" || m[0] == '.' {
				return false
			}
		default:
			if m == "" || m[0] != p[0] {
				return false
			}
		}
		p, m = p[1:], m[1:]
	}
	return m == ""
}

// checkRoutingKey returns what is wrong with a routing_key template, or "".
func checkRoutingKey(k string) string {
	rest, static := k, 0
	for rest != "" {
		open := strings.IndexAny(rest, "{}")
		if open < 0 {
			static += len(rest)
			break
		}
		static += open
		if rest[open] == '}' {
			return fmt.Sprintf(`has a "}" without "{"; the placeholders are {method} and {node}, got %s`, quote(k, false))
		}
		end := strings.IndexByte(rest[open:], '}')
		if end < 0 {
			return fmt.Sprintf(`has a "{" without "}"; the placeholders are {method} and {node}, got %s`, quote(k, false))
		}
		switch ph := rest[open : open+end+1]; ph {
		case placeholderMethod, placeholderNode:
		case placeholderToken:
			return "must not use {token}: session ids must not reach broker routing keys, logs or the management UI, " +
				"and the \".\" in a token would split topic routing; route on {method} and read the token from the message body"
		default:
			return fmt.Sprintf("has the unknown placeholder %s; the placeholders are {method} and {node}", quote(ph, false))
		}
		rest = rest[open+end+1:]
	}
	if static > maxRoutingKeyLen {
		return fmt.Sprintf("is %d bytes long without its placeholders; AMQP allows at most %d", static, maxRoutingKeyLen)
	}
	return ""
}
