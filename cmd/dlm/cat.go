package main

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// runCat prints the committed bytes of one file, exactly as stored.
func runCat(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("cat", "[flags] NAME", "Prints the committed content of a file (file_0 to file_99).", stderr)
	cf := addClientFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errors.New("cat: give exactly one file name")
	}
	r, err := cf.reader(stderr)
	if err != nil {
		return fmt.Errorf("cat: %w", err)
	}
	data, err := r.ReadFile(ctx, fs.Arg(0))
	if err != nil {
		return fmt.Errorf("cat: %w", err)
	}
	_, err = stdout.Write(data)
	return err
}
