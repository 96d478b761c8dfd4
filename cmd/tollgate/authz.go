package main

import (
	"context"
	"errors"
)

func runAuthz(ctx context.Context, args []string) error {
	return errors.New("authz: not built yet")
}
