// Command tutorial runs the tutorial flow (internal/tutorial) against a
// running Tollgate gateway and prints each step, for the Tilt button and
// for trying a cluster by hand:
//
//	go run ./cmd/tutorial -url http://localhost:8080 [-admin-name admin -admin-password-file f]
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/tollgate-dev/tollgate/internal/tutorial"
)

func main() {
	url := flag.String("url", "http://localhost:8080", "the gateway's base URL")
	adminName := flag.String("admin-name", "", "admin user for the GET /users step (optional)")
	adminFile := flag.String("admin-password-file", "", "file holding the admin's password")
	flag.Parse()

	opts := tutorial.Options{AdminName: *adminName}
	if *adminName != "" {
		p, err := os.ReadFile(*adminFile)
		if err != nil {
			fmt.Fprintf(os.Stderr, "tutorial: admin password: %v\n", err)
			os.Exit(2)
		}
		opts.AdminPassword = strings.TrimSpace(string(p))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client := &http.Client{Timeout: 10 * time.Second}
	for _, s := range tutorial.Steps(*url, client, opts) {
		if err := s.Run(ctx); err != nil {
			fmt.Printf("FAIL %s: %v\n", s.Name, err)
			os.Exit(1)
		}
		fmt.Printf("ok   %s\n", s.Name)
	}
	fmt.Printf("tutorial flow passed against %s\n", *url)
}
