// Package httpapi is the one place where Tollgate's HTTP services turn
// errors into responses and requests into values.
//
// A handler returns an *Error carrying the status, the message the client
// may see and the cause only the log sees (the tsweb habit). Nothing here
// ever writes a cause, a password or a token to the client.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
)

// Error is an error with the HTTP status and the client-visible message
// it maps to. Err is the cause, for the log only.
type Error struct {
	Status int
	Msg    string
	Err    error
	// Header holds extra response headers, such as WWW-Authenticate or
	// Retry-After.
	Header http.Header
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%d %s: %v", e.Status, e.Msg, e.Err)
	}
	return fmt.Sprintf("%d %s", e.Status, e.Msg)
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with status and a client-visible message
// formatted from format and args; cause may be nil.
func Errorf(status int, cause error, format string, args ...any) *Error {
	return &Error{Status: status, Msg: fmt.Sprintf(format, args...), Err: cause}
}

// HandlerFunc is an http.HandlerFunc that returns an error instead of
// writing one.
type HandlerFunc func(w http.ResponseWriter, r *http.Request) error

// Handle adapts h to an http.Handler: a returned *Error becomes its status
// and JSON message; any other error becomes a 500 whose cause is logged
// and never shown.
func Handle(h HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			WriteError(w, r, err)
		}
	})
}

// StatusClientClosedRequest is the status recorded for a request its
// client abandoned before the answer (nginx's 499). It is not a standard
// code and no client sees it: it only keeps such requests apart from
// server errors in logs and metrics.
const StatusClientClosedRequest = 499

// WriteError writes err as a JSON error response and logs it with the
// request's logger.
//
// An error caused by the cancellation of the request's own context means
// the client went away (a proxy timed out, a user gave up): that is not
// a server error. It is logged at Info as "client closed request" and
// recorded as StatusClientClosedRequest, with no body.
func WriteError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) && errors.Is(r.Context().Err(), context.Canceled) {
		Logger(r.Context()).Info("client closed request", "status", StatusClientClosedRequest, "err", err)
		w.WriteHeader(StatusClientClosedRequest)
		return
	}
	var he *Error
	if !errors.As(err, &he) {
		he = &Error{Status: http.StatusInternalServerError, Msg: "internal error", Err: err}
	}
	log := Logger(r.Context())
	if he.Status >= 500 {
		log.Error("request failed", "status", he.Status, "err", err)
	} else if he.Err != nil {
		log.Info("request refused", "status", he.Status, "msg", he.Msg, "err", he.Err)
	}
	for k, vs := range he.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	WriteJSON(w, he.Status, map[string]string{"message": he.Msg})
}

// WriteJSON writes v as a JSON response with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		body = []byte(`{"message":"internal error"}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// NotFound answers a request with a JSON 404.
func NotFound(w http.ResponseWriter, r *http.Request) {
	WriteError(w, r, Errorf(http.StatusNotFound, nil, "not found"))
}

// discard is the logger used when a request carries none.
var discard = slog.New(slog.DiscardHandler)
