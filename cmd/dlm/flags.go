package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// newFlags is the flag set of one command, with the help every command
// prints the same way: "usage: dlm NAME ARGS", what it does, its flags.
// Parse it with parseFlags.
func newFlags(name, args, about string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		w := fs.Output()
		line := "usage: dlm " + name
		if args != "" {
			line += " " + args
		}
		fmt.Fprintln(w, line)
		if about != "" {
			fmt.Fprintln(w, about)
		}
		fmt.Fprintln(w, "\nflags:")
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args. The flag package prints a bad flag's error
// itself and then main printed it again; here the error is only returned
// (main prints it once, after "dlm: "), and the help goes to the output
// only when asked for with -h.
func parseFlags(fs *flag.FlagSet, args []string) error {
	out := fs.Output()
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	fs.SetOutput(out)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.Usage()
		return err
	case err != nil:
		return fmt.Errorf("%s: %w (dlm help %s lists the flags)", fs.Name(), err, fs.Name())
	}
	return nil
}

// outputFormat is the --output flag of the commands whose answer scripts
// read: a table (or line) for people, or JSON.
type outputFormat string

const (
	outputText outputFormat = "text"
	outputJSON outputFormat = "json"
)

func addOutputFlag(fs *flag.FlagSet) *outputFormat {
	o := outputText
	fs.Var(&o, "output", "text (for people) or json (for scripts)")
	return &o
}

func (o *outputFormat) String() string { return string(*o) }

func (o *outputFormat) Set(s string) error {
	switch f := outputFormat(strings.ToLower(s)); f {
	case outputText, outputJSON:
		*o = f
		return nil
	}
	return fmt.Errorf("%q is not an output format (text or json)", s)
}

// writeProtoJSON prints an API message as protojson (the field names of
// the proto, every field present), as status --output json always has.
func writeProtoJSON(w io.Writer, m proto.Message) error {
	b, err := protojson.MarshalOptions{Multiline: true, EmitUnpopulated: true}.Marshal(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}
