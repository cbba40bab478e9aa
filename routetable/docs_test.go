package routetable

import (
	"io"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/piped-dev/piped/config"
)

// Every TOML example in docs/routing.md loads, validates and compiles.
func TestDocsExamples(t *testing.T) {
	doc, err := os.ReadFile("../docs/routing.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```toml\n(.*?)```").FindAllSubmatch(doc, -1)
	if len(blocks) < 5 {
		t.Fatalf("found %d TOML examples in docs/routing.md", len(blocks))
	}
	for i, b := range blocks {
		file := filepath.Join(t.TempDir(), "piped.toml")
		if err := os.WriteFile(file, b[1], 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Load([]string{"--config", file, "--nodeId", "n1"}, nil, io.Discard)
		if err == nil {
			err = cfg.Validate()
		}
		if err == nil {
			_, err = FromConfig(cfg)
		}
		if err != nil {
			t.Errorf("example %d:\n%s\n%v", i, b[1], err)
		}
	}
}
