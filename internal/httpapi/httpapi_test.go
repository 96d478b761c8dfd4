package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestWriteErrorClientClosedRequest: an error caused by the cancellation
// of the request's own context is the client going away, recorded as 499
// at Info with no body; a cancellation that is not the request's stays a
// logged 500.
func TestWriteErrorClientClosedRequest(t *testing.T) {
	for _, tc := range []struct {
		name       string
		cancelled  bool // the request's context is cancelled
		err        error
		wantStatus int
		wantLevel  string
		wantMsg    string
	}{
		{"client gone", true, fmt.Errorf("create book: %w", context.Canceled), StatusClientClosedRequest, "INFO", "client closed request"},
		{"cancelled elsewhere", false, fmt.Errorf("create book: %w", context.Canceled), 500, "ERROR", "request failed"},
		{"client gone, other failure", true, errors.New("disk full"), 500, "ERROR", "request failed"},
		{"client gone, client error", true, Errorf(http.StatusBadRequest, nil, "bad"), 400, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			ctx, cancel := context.WithCancel(WithLogger(context.Background(), slog.New(slog.NewJSONHandler(&logs, nil))))
			defer cancel()
			if tc.cancelled {
				cancel()
			}
			rec := httptest.NewRecorder()
			WriteError(rec, httptest.NewRequest("POST", "/books", nil).WithContext(ctx), tc.err)
			if rec.Code != tc.wantStatus {
				t.Errorf("WriteError(%v) status = %d, want %d", tc.err, rec.Code, tc.wantStatus)
			}
			if tc.wantStatus == StatusClientClosedRequest && rec.Body.Len() != 0 {
				t.Errorf("WriteError(%v) body = %q, want none", tc.err, rec.Body)
			}
			var entry struct{ Level, Msg string }
			if tc.wantLevel == "" {
				if logs.Len() != 0 {
					t.Errorf("WriteError(%v) logged %s, want nothing", tc.err, logs.String())
				}
				return
			}
			if err := json.Unmarshal(logs.Bytes(), &entry); err != nil {
				t.Fatalf("log %q: %v", logs.String(), err)
			}
			if entry.Level != tc.wantLevel || entry.Msg != tc.wantMsg {
				t.Errorf("WriteError(%v) logged %s %q, want %s %q", tc.err, entry.Level, entry.Msg, tc.wantLevel, tc.wantMsg)
			}
		})
	}
}
