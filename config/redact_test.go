package config

import (
	"strings"
	"testing"
)

// RedactURL is the one URL redactor: it keeps what helps (scheme, user,
// host, vhost) and never lets the password through, also for URLs that are
// malformed in the ways passwords make them (an unescaped "/", "?", "#" or
// "@"; no scheme; a stray "://" later on).
func TestRedactURL(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"amqp://guest:guest@localhost:5672/", "amqp://guest:xxxxx@localhost:5672/"},
		{"amqps://u:p%40ss@host/vh", "amqps://u:xxxxx@host/vh"},
		{"amqp://localhost/", "amqp://localhost/"},
		{"amqp://u@h/", "amqp://u@h/"},
		{"amqp:///", "amqp:///"},
		{"", ""},
		{"AMQP://u:s3cret@h/", "amqp://u:xxxxx@h/"},
		{"amqp://u:s3cret@h:5672/", "amqp://u:xxxxx@h:5672/"},
		{"https://keys.example/jwks?access_token=s3cret&v=2", "https://keys.example/jwks?access_token=xxxxx&v=xxxxx"}, // query values
		{"amqp://u@h/?heartbeat=10", "amqp://u@h/?heartbeat=xxxxx"},
		// Replaced entirely:
		{"u:s3cret@h:5672", "xxxxx"},                // no scheme: the password parses as opaque data
		{"u:s3cret@h/?next=amqp://x", "xxxxx"},      // no scheme, a "://" further on
		{"amqp:u:s3cret@h", "xxxxx"},                // opaque
		{"amqp://u:12/s3cret@h/", "xxxxx"},          // unescaped "/" in the password
		{"amqp://u:12?s3cret@h/", "xxxxx"},          // unescaped "?"
		{"amqp://u:12#s3cret@h/", "xxxxx"},          // unescaped "#"
		{"amqp://u:s3cret@h/v@h", "xxxxx"},          // "@" after the authority
		{"amqp://h/?x=amqp://u:s3cret@h2", "xxxxx"}, // a URL in the query
		{"amqp://u:s3cret%zz@h/", "xxxxx"},          // bad escape
		{" amqp://u:s3cret@h/", "xxxxx"},            // leading space
		{"amqp://u:s3cret@h/\n", "xxxxx"},           // control character
		{"not a url with s3cret", "xxxxx"},          // not a URL at all
	} {
		got := RedactURL(tc.in)
		if got != tc.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if strings.Contains(got, "s3cret") {
			t.Errorf("RedactURL(%q) = %q: the password shows", tc.in, got)
		}
	}
}
