package deploy_test

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	Cmd  string // upper-cased: FROM, RUN, …
	Args string
}

// stage is one FROM and what follows it.
type stage struct {
	Image, Name string
	Body        []instruction
}

// dockerfile is what the tests read from the Dockerfile.
type dockerfile struct {
	Stages []stage
}

// readDockerfile parses path: comments and blank lines dropped, lines ending
// in a backslash joined to the next.
func readDockerfile(path string) (*dockerfile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var d dockerfile
	var cont strings.Builder
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			cont.WriteString(strings.TrimSuffix(line, "\\") + " ")
			continue
		}
		cont.WriteString(line)
		full := cont.String()
		cont.Reset()
		cmd, args, _ := strings.Cut(full, " ")
		in := instruction{Cmd: strings.ToUpper(cmd), Args: strings.TrimSpace(args)}
		if in.Cmd == "FROM" {
			f := strings.Fields(in.Args)
			st := stage{Image: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.Name = f[2]
			}
			d.Stages = append(d.Stages, st)
			continue
		}
		if len(d.Stages) == 0 {
			return nil, fmt.Errorf("%s: %s before the first FROM", path, in.Cmd)
		}
		last := &d.Stages[len(d.Stages)-1]
		last.Body = append(last.Body, in)
	}
	return &d, nil
}

// final is the stage `docker build .` builds: the last.
func (d *dockerfile) final() *stage { return &d.Stages[len(d.Stages)-1] }

// stageNamed returns the stage called name, or nil.
func (d *dockerfile) stageNamed(name string) *stage {
	for i := range d.Stages {
		if d.Stages[i].Name == name {
			return &d.Stages[i]
		}
	}
	return nil
}

// all returns the instructions cmd of the stage.
func (s *stage) all(cmd string) []instruction {
	var out []instruction
	for _, in := range s.Body {
		if in.Cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

// last returns the last instruction cmd of the stage (the one in force), or "".
func (s *stage) last(cmd string) string {
	all := s.all(cmd)
	if len(all) == 0 {
		return ""
	}
	return all[len(all)-1].Args
}

// env returns the stage's ENV as KEY=VALUE, quotes removed.
func (s *stage) env() []string {
	var out []string
	for _, in := range s.all("ENV") {
		for _, kv := range strings.Fields(in.Args) {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				continue
			}
			out = append(out, k+"="+strings.Trim(v, `"'`))
		}
	}
	return out
}

// execForm parses a JSON array argument (exec form), or reports false for
// the shell form.
func execForm(args string) ([]string, bool) {
	if !strings.HasPrefix(strings.TrimSpace(args), "[") {
		return nil, false
	}
	var out []string
	if err := json.Unmarshal([]byte(args), &out); err != nil {
		return nil, false
	}
	return out, true
}

// dockerHealthcheck is a parsed HEALTHCHECK: its --options and its CMD.
type dockerHealthcheck struct {
	Options map[string]string
	Cmd     string // the argument of CMD, exec or shell form
}

func parseHealthcheck(args string) dockerHealthcheck {
	h := dockerHealthcheck{Options: map[string]string{}}
	rest := args
	for {
		rest = strings.TrimSpace(rest)
		if !strings.HasPrefix(rest, "--") {
			break
		}
		opt, after, _ := strings.Cut(rest, " ")
		k, v, _ := strings.Cut(strings.TrimPrefix(opt, "--"), "=")
		h.Options[k] = v
		rest = after
	}
	if c, after, ok := strings.Cut(rest, " "); ok && strings.EqualFold(c, "CMD") {
		h.Cmd = strings.TrimSpace(after)
	}
	return h
}
