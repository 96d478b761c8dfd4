package chartcheck

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
)

// BuildTollgate builds ./cmd/tollgate of the repository at repo into dir
// and returns the binary's path.
func BuildTollgate(ctx context.Context, repo, dir string) (string, error) {
	bin := filepath.Join(dir, "tollgate")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/tollgate")
	cmd.Dir = repo
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build tollgate: %w\n%s", err, out)
	}
	return bin, nil
}

// ReadBinary asks the tollgate binary at path for the flags of each
// subcommand (`tollgate <sub> -h`).
func ReadBinary(ctx context.Context, path string, subcommands ...string) (Binary, error) {
	b := Binary{}
	for _, sub := range subcommands {
		// -h prints the flags and exits 0 (flag.ErrHelp is not a failure).
		out, err := exec.CommandContext(ctx, path, sub, "-h").CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("tollgate %s -h: %w\n%s", sub, err, out)
		}
		flags, err := ParseUsage(string(out))
		if err != nil {
			return nil, fmt.Errorf("tollgate %s -h: %w", sub, err)
		}
		b[sub] = flags
	}
	return b, nil
}
