package main

import (
	"context"
	"errors"
)

func runIssuer(ctx context.Context, args []string) error {
	return errors.New("issuer: not built yet")
}
