package main

import (
	"context"
	"errors"
	"io"
)

// Placeholders until the client commands land; each moves to its own file.

func runAppend(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	return errors.New("append: not built yet")
}

func runCat(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	return errors.New("cat: not built yet")
}

func runStatus(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	return errors.New("status: not built yet")
}

func runShell(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	return errors.New("shell: not built yet")
}

func runBench(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	return errors.New("bench: not built yet")
}
