package config

import "github.com/spf13/pflag"

// ErrHelp is returned by Load when -h or --help was given, after the usage
// text was printed. It wraps pflag.ErrHelp, so errors.Is(err, pflag.ErrHelp)
// holds too. A program should exit with status 0 on it.
var ErrHelp error = helpError{}

// helpError is the type of ErrHelp: a comparable value whose message is
// prefixed like every other error of the package and which unwraps to
// pflag.ErrHelp.
type helpError struct{}

func (helpError) Error() string { return "config: help requested" }

func (helpError) Unwrap() error { return pflag.ErrHelp }
