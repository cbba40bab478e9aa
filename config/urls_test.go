package config

import (
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
)

// amqp.urls: from the file and the environment, used instead of amqp.url,
// and never echoed.
func TestLoadURLs(t *testing.T) {
	tests := []struct {
		name    string
		file    string // piped.toml, when not empty
		env     []string
		want    []string // AMQP.URLs
		brokers []string // AMQP.BrokerURLs()
		errs    []string // substrings of the error
	}{
		{
			name:    "default: none, amqp.url alone",
			want:    []string{},
			brokers: []string{"amqp://guest:guest@localhost:5672/"},
		},
		{
			name:    "file",
			file:    "[amqp]\nurls = [\"amqp://u:s3cret@a:5672/\", \"amqp://u:s3cret@b:5672/\"]\n",
			want:    []string{"amqp://u:s3cret@a:5672/", "amqp://u:s3cret@b:5672/"},
			brokers: []string{"amqp://u:s3cret@a:5672/", "amqp://u:s3cret@b:5672/"},
		},
		{
			name:    "environment, comma-separated, spaces and empty elements dropped",
			env:     []string{"PIPED_AMQP_URLS=amqp://u:s3cret@a/, amqp://u:s3cret@b/,,amqp://u:s3cret@c/,"},
			want:    []string{"amqp://u:s3cret@a/", "amqp://u:s3cret@b/", "amqp://u:s3cret@c/"},
			brokers: []string{"amqp://u:s3cret@a/", "amqp://u:s3cret@b/", "amqp://u:s3cret@c/"},
		},
		{
			name:    "environment wins over the file, and over amqp.url",
			file:    "[amqp]\nurl = \"amqp://u:s3cret@one/\"\nurls = [\"amqp://u:s3cret@a/\"]\n",
			env:     []string{"PIPED_AMQP_URLS=amqp://u:s3cret@b/,amqp://u:s3cret@c/"},
			want:    []string{"amqp://u:s3cret@b/", "amqp://u:s3cret@c/"},
			brokers: []string{"amqp://u:s3cret@b/", "amqp://u:s3cret@c/"},
		},
		{
			name:    "an empty variable: amqp.url again",
			file:    "[amqp]\nurl = \"amqp://u:s3cret@one/\"\nurls = [\"amqp://u:s3cret@a/\"]\n",
			env:     []string{"PIPED_AMQP_URLS="},
			want:    []string{},
			brokers: []string{"amqp://u:s3cret@one/"},
		},
		{
			name: "a string in the file is not echoed",
			file: "[amqp]\nurls = \"amqp://u:s3cret@a/\"\n",
			errs: []string{"amqp.urls: expected an array of strings", "got a string"},
		},
		{
			name: "a number in the list is not echoed",
			file: "[amqp]\nurls = [\"amqp://u:s3cret@a/\", 12345]\n",
			errs: []string{"amqp.urls: element 1: expected a string, got an integer"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Chdir(t.TempDir())
			if tt.file != "" {
				if err := os.WriteFile("piped.toml", []byte(tt.file), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			c, err := Load(nil, tt.env, nil)
			if len(tt.errs) > 0 {
				if err == nil {
					t.Fatal("Load: no error")
				}
				for _, s := range tt.errs {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q lacks %q", err, s)
					}
				}
				for _, s := range []string{"s3cret", "12345"} {
					if strings.Contains(err.Error(), s) {
						t.Errorf("error %q shows %q", err, s)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if !reflect.DeepEqual(c.AMQP.URLs, tt.want) {
				t.Errorf("AMQP.URLs = %q, want %q", c.AMQP.URLs, tt.want)
			}
			if got := c.AMQP.BrokerURLs(); !reflect.DeepEqual(got, tt.brokers) {
				t.Errorf("BrokerURLs() = %q, want %q", got, tt.brokers)
			}
			if got, want := c.AMQP.Cluster(), len(tt.want) > 0; got != want {
				t.Errorf("Cluster() = %v, want %v", got, want)
			}
		})
	}
}

func TestBrokerURLsIsACopy(t *testing.T) {
	a := AMQP{URL: "amqp://one/", URLs: []string{"amqp://a/", "amqp://b/"}}
	a.BrokerURLs()[0] = "changed"
	if a.URLs[0] != "amqp://a/" {
		t.Error("BrokerURLs shares amqp.urls")
	}
}

func TestValidURLs(t *testing.T) {
	for _, urls := range [][]string{
		{"amqp://u:s3cret@a:5672/"},
		{"amqp://u:s3cret@a:5672/", "amqps://u:s3cret@b:5671", "amqp://c"},
		{"amqp://u:s3cret@a/piped", "amqp://v:other@b:5673/piped"},
	} {
		c := valid()
		c.AMQP.URLs = urls
		c.AMQP.URL = "not checked: amqp.urls is used instead"
		if err := c.Validate(); err != nil {
			t.Errorf("Validate(amqp.urls %q): %v", urls, err)
		}
	}
}

func TestRedactedURLs(t *testing.T) {
	c := valid()
	c.AMQP.URLs = []string{"amqp://piped:s3cret@a:5672/vh", "amqps://piped:s3cret@b/vh", "u:s3cret@c:5672"}
	r := c.Redacted()
	got := r["amqp"].(map[string]any)["urls"]
	want := []string{"amqp://piped:xxxxx@a:5672/vh", "amqps://piped:xxxxx@b/vh", "xxxxx"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Redacted amqp.urls = %#v, want %#v", got, want)
	}
	if c.AMQP.URLs[0] != "amqp://piped:s3cret@a:5672/vh" {
		t.Error("Redacted changed the Config's amqp.urls")
	}
	js, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	for what, s := range map[string]string{"fmt": fmt.Sprint(r), "json": string(js), "LogValue": c.LogValue().String()} {
		if strings.Contains(s, "s3cret") {
			t.Errorf("%s output shows the password: %s", what, s)
		}
	}
}
