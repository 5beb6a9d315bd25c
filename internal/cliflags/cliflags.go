// Package cliflags is how sessionledger's commands and cmd/example-api read
// their flags: each flag can also be set as SESSIONLEDGER_<NAME> in the
// environment (a flag on the command line wins), and -h/--help prints a usage
// that names those variables.
package cliflags

import (
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"
)

// EnvPrefix starts the name of every flag's environment variable.
const EnvPrefix = "SESSIONLEDGER_"

// EnvName is the environment variable for a flag: http-addr →
// SESSIONLEDGER_HTTP_ADDR.
func EnvName(flagName string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Parse parses args into fs, then sets each flag not given on the command
// line from SESSIONLEDGER_<NAME> when that is set: a flag given wins, and a
// bad variable it overrides is not read. Give fs.Usage a Usage first: -h or
// --help prints it, and Parse returns flag.ErrHelp, whatever the
// environment holds. An error about a variable never repeats its value,
// which may be a secret.
func Parse(fs *flag.FlagSet, args []string, lookupEnv func(string) (string, bool)) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || envErr != nil {
			return
		}
		if v, ok := lookupEnv(EnvName(f.Name)); ok {
			if err := f.Value.Set(v); err != nil {
				typ, _ := flag.UnquoteUsage(f)
				if typ == "" {
					typ = "value"
				}
				envErr = fmt.Errorf("%s is not a valid %s for --%s", EnvName(f.Name), typ, f.Name)
			}
		}
	})
	return envErr
}

// EnvVar is an environment variable a command reads that is not a flag's.
type EnvVar struct {
	Name, Usage string
}

// Usage returns a usage function for fs: "usage: <command> [flags]", then
// every flag with its environment variable, its meaning and its default, then
// the variables in extra. It writes to fs.Output().
func Usage(fs *flag.FlagSet, command string, extra ...EnvVar) func() {
	return func() {
		w := fs.Output()
		fmt.Fprintf(w, "usage: %s [flags]\n\nflags (each also read from the environment variable shown; a flag given wins):\n", command)
		fs.VisitAll(func(f *flag.Flag) {
			typ, usage := flag.UnquoteUsage(f)
			fmt.Fprintf(w, "  --%s", f.Name)
			if typ != "" {
				fmt.Fprintf(w, " %s", typ)
			}
			fmt.Fprintf(w, "  [$%s]\n        %s", EnvName(f.Name), strings.ReplaceAll(usage, "\n", "\n        "))
			if d := f.DefValue; d != "" && d != "0" && d != "0s" && d != "false" {
				if g, ok := f.Value.(flag.Getter); ok {
					if _, ok := g.Get().(string); ok {
						d = fmt.Sprintf("%q", d)
					}
				}
				fmt.Fprintf(w, " (default %s)", d)
			}
			fmt.Fprintln(w)
		})
		if len(extra) == 0 {
			return
		}
		fmt.Fprintln(w, "\nenvironment only:")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, e := range extra {
			fmt.Fprintf(tw, "  %s\t%s\n", e.Name, e.Usage)
		}
		tw.Flush()
	}
}
