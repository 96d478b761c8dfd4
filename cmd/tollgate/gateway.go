package main

import (
	"context"
	"errors"
)

func runGateway(ctx context.Context, args []string) error {
	return errors.New("gateway: not built yet")
}
