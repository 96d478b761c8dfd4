package main

import (
	"context"
	"os"
	"path/filepath"

	"github.com/tollgate-dev/tollgate/books"
	"github.com/tollgate-dev/tollgate/internal/server"
	"github.com/tollgate-dev/tollgate/internal/telemetry"
)

// runBooks runs the books backend alone, as it runs in the cluster.
func runBooks(ctx context.Context, args []string) error {
	d := books.DefaultConfig()
	f := newFlagSet("books")
	var (
		addr, dataDir, db string
		lf                logFlags
		cfg               = d
	)
	f.String(&addr, "addr", "TOLLGATE_BOOKS_ADDR", "127.0.0.1:8082", "address to serve the books API, health and metrics on (\":8082\" for every interface: only the gateway should reach books)")
	f.String(&dataDir, "data-dir", "TOLLGATE_DATA_DIR", filepath.Dir(d.DB), "directory for local data (the SQLite file)")
	f.String(&db, "db", "TOLLGATE_BOOKS_DB", "", "SQLite file path or postgres:// URL (default <data-dir>/books.db)")
	f.Duration(&cfg.ShutdownTimeout, "shutdown-timeout", "TOLLGATE_SHUTDOWN_TIMEOUT", d.ShutdownTimeout, "how long to wait for in-flight requests at shutdown")
	lf.register(f)
	if err := f.parse(args); err != nil {
		return err
	}
	log, err := lf.logger("books")
	if err != nil {
		return err
	}
	cfg.DB = db
	if cfg.DB == "" {
		cfg.DB = filepath.Join(dataDir, "books.db")
	}
	tr, err := tracingFromEnv(os.Environ())
	if err != nil {
		return err
	}
	defer flushTracing(tr)
	reg := server.NewRegistry()
	if cfg.TracerProvider, err = tr.Provider(ctx, serviceName(telemetry.ServiceBooks), reg); err != nil {
		return err
	}
	svc, err := books.New(ctx, cfg, log, reg)
	if err != nil {
		return err
	}
	l, err := server.Listen("books", addr)
	if err != nil {
		svc.Close()
		return err
	}
	return svc.Serve(ctx, l)
}
