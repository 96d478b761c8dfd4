package main

import (
	"context"
	"path/filepath"

	"github.com/tollgate-dev/tollgate/books"
	"github.com/tollgate-dev/tollgate/internal/server"
)

// runBooks runs the books backend alone, as it runs in the cluster.
func runBooks(ctx context.Context, args []string) error {
	f := newFlagSet("books")
	var (
		addr, dataDir, db string
		lf                logFlags
	)
	f.String(&addr, "addr", "TOLLGATE_BOOKS_ADDR", ":8082", "address to serve the books API, health and metrics on")
	f.String(&dataDir, "data-dir", "TOLLGATE_DATA_DIR", "./data", "directory for local data (the SQLite file)")
	f.String(&db, "db", "TOLLGATE_BOOKS_DB", "", "SQLite file path or postgres:// URL (default <data-dir>/books.db)")
	lf.register(f)
	if err := f.parse(args); err != nil {
		return err
	}
	log, err := lf.logger("books")
	if err != nil {
		return err
	}
	if db == "" {
		db = filepath.Join(dataDir, "books.db")
	}
	svc, err := books.New(ctx, books.Config{DB: db}, log, server.NewRegistry())
	if err != nil {
		return err
	}
	defer svc.Close()
	l, err := server.Listen("books", addr)
	if err != nil {
		return err
	}
	return server.Run(ctx, log, server.DefaultShutdownTimeout, svc.SetStopping,
		server.Bound{Name: "books", Unit: server.NewHTTP(svc.Handler(), log), Listener: l})
}
