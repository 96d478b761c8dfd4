package main

import (
	"context"
	"errors"
)

func runBooks(ctx context.Context, args []string) error {
	return errors.New("books: not built yet")
}
