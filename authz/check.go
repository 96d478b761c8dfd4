package authz

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"go.opentelemetry.io/otel/trace"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"
)

// Identity headers authz sets for the upstream on allow.
const (
	HeaderUserID    = "x-user-id"
	HeaderUserName  = "x-user-name"
	HeaderUserRoles = "x-user-roles"
)

func identityHeader(h string) bool {
	return h == HeaderUserID || h == HeaderUserName || h == HeaderUserRoles
}

// Check implements envoy.service.auth.v3.Authorization. It always
// returns a CheckResponse and a nil error: a gRPC error means "no
// decision" to Envoy, which a failure_mode_allow setting would let
// through. The messages inside an allow answer (below the response and
// its OkHttpResponse) are shared with other answers and must not be
// modified; gRPC only reads them.
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	start := time.Now()
	attrs := req.GetAttributes()
	hr := attrs.GetRequest().GetHttp()
	var span trace.Span
	if s.tracer != nil {
		ctx, span = s.startCheckSpan(ctx, envoyHeaders{hr})
	}
	pol, polErr := parsePolicy(attrs.GetContextExtensions())
	d := s.decide(ctx, envoyHeaders{hr}, pol, polErr)
	resp := s.checkResponse(d)
	elapsed := time.Since(start)
	if span != nil {
		s.endCheckSpan(span, d)
	}
	s.record(ctx, protoGRPC, d, elapsed, requestID(envoyHeaders{hr}), hr.GetMethod(), hr.GetPath())
	return resp, nil
}

// envoyHeaders reads the headers of a CheckRequest: the headers map
// (Envoy's default, keys lowercase, repeats joined with ","), or the
// header_map list when Envoy runs with encode_raw_headers.
type envoyHeaders struct {
	r *authv3.AttributeContext_HttpRequest
}

func (e envoyHeaders) header(name string) (string, bool) {
	if v, ok := e.r.GetHeaders()[name]; ok {
		return v, true
	}
	var (
		val   string
		found bool
	)
	for _, h := range e.r.GetHeaderMap().GetHeaders() {
		if h.GetKey() != name {
			continue
		}
		v := h.GetValue()
		if len(h.GetRawValue()) > 0 {
			v = string(h.GetRawValue())
		}
		if found {
			val += "," + v
		} else {
			val, found = v, true
		}
	}
	return val, found
}

// checkResponse turns a decision into Envoy's answer.
func (s *Server) checkResponse(d decision) *authv3.CheckResponse {
	if d.outcome() != allowed {
		return deniedResponse(d)
	}
	return s.okResponse(d.id)
}

// identityHeaders are the identity header names in the order an allow
// answer lists them; identity.values gives their values.
var identityHeaders = [...]string{HeaderUserID, HeaderUserName, HeaderUserRoles}

// numRemoveLists is the number of subsets of identityHeaders that an
// identity can leave empty.
const numRemoveLists = 1 << len(identityHeaders)

// removeLists returns, for each subset of identity headers (bit i set:
// identityHeaders[i] has no value), the headers an allow answer removes:
// that subset, then the token headers. Only the subset depends on the
// identity, so New builds all of them once.
func removeLists(tokenHeaders []string) (lists [numRemoveLists][]string, joined [numRemoveLists]string) {
	for m := range numRemoveLists {
		l := make([]string, 0, len(identityHeaders)+len(tokenHeaders))
		for i, h := range identityHeaders {
			if m&(1<<i) != 0 {
				l = append(l, h)
			}
		}
		l = append(l, tokenHeaders...)
		// Clipped, so an append to one answer's list cannot write into
		// the shared array.
		lists[m], joined[m] = slices.Clip(l), strings.Join(l, ",")
	}
	return lists, joined
}

// allowParts are the parts of an allow answer that depend only on the
// identity. newIdentity builds them once per verified token, and every
// answer for that token (the cache hands out the same identity) shares
// them, so nothing may modify them afterwards: gRPC only reads a
// response while marshalling it.
type allowParts struct {
	headers  []*corev3.HeaderValueOption // the identity headers that have a value
	missing  int                         // bit i set: identityHeaders[i] has none and is removed
	metadata *structpb.Struct            // dynamic metadata for Envoy's access logs
}

// newAllowParts builds id's allowParts.
func newAllowParts(id *identity) allowParts {
	var p allowParts
	vals := id.values()
	p.headers = make([]*corev3.HeaderValueOption, 0, len(vals))
	for i, v := range vals {
		if v == "" {
			p.missing |= 1 << i
			continue
		}
		p.headers = append(p.headers, overwrite(identityHeaders[i], v))
	}
	p.headers = slices.Clip(p.headers)
	p.metadata = identityMetadata(id)
	return p
}

// okStatus is the status of every allow answer; shared, never modified.
var okStatus = &rpcstatus.Status{Code: int32(codes.OK)}

// okResponse lets the request through with the caller's identity. Every
// identity header is either overwritten (OVERWRITE_IF_EXISTS_OR_ADD,
// with the deprecated append left unset, which every Envoy release reads
// as overwrite) or removed, so whatever the client sent under those
// names never reaches the upstream; the token headers are removed too.
//
// The answer is built from parts made once per identity and once in New;
// only the three top-level messages are new, so that setting a field of
// one answer cannot change another. The parts below them are shared
// and must not be modified.
func (s *Server) okResponse(id *identity) *authv3.CheckResponse {
	return &authv3.CheckResponse{
		Status: okStatus,
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers:         id.allow.headers,
			HeadersToRemove: s.removeLists[id.allow.missing],
		}},
		DynamicMetadata: id.allow.metadata,
	}
}

// identityMetadata is the dynamic metadata for Envoy's access logs.
func identityMetadata(id *identity) *structpb.Struct {
	f := make(map[string]*structpb.Value, 3)
	f["sub"] = structpb.NewStringValue(id.sub)
	if id.name != "" {
		f["name"] = structpb.NewStringValue(id.name)
	}
	if id.jti != "" {
		f["jti"] = structpb.NewStringValue(id.jti)
	}
	return &structpb.Struct{Fields: f}
}

func overwrite(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: k, Value: v},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}

// denial is what a client is told about one kind of denial: nothing
// about which check failed (that is in the log).
type denial struct {
	status    int
	code      codes.Code
	challenge string // WWW-Authenticate, if any
	message   string
	body      string // {"message": message}
}

var (
	denyNoToken = denial{401, codes.Unauthenticated, `Bearer realm="` + Realm + `"`,
		"a valid token is missing", `{"message":"a valid token is missing"}`}
	denyInvalid = denial{401, codes.Unauthenticated, `Bearer realm="` + Realm + `", error="invalid_token"`,
		"token is invalid", `{"message":"token is invalid"}`}
	denyForbidden = denial{403, codes.PermissionDenied, `Bearer realm="` + Realm + `", error="insufficient_scope"`,
		"insufficient permissions", `{"message":"insufficient permissions"}`}
	denyUnavailable = denial{503, codes.Unavailable, "",
		"authorization is unavailable", `{"message":"authorization is unavailable"}`}
)

// retryAfter is the Retry-After a 503 denial suggests, in seconds.
const retryAfter = "5"

// denialFor picks what the client is told for a denied decision. RFC
// 6750 §3.1: a request with no token gets a challenge without an error
// code.
func denialFor(d decision) denial {
	switch {
	case d.reason == reasonNoToken:
		return denyNoToken
	case d.outcome() == permissionDenied:
		return denyForbidden
	case d.outcome() == unavailable:
		return denyUnavailable
	}
	return denyInvalid
}

// deniedResponse is the one place a denial becomes a CheckResponse: a
// status Envoy treats as Denied (never an error), the HTTP status, the
// challenge and a short JSON body.
func deniedResponse(d decision) *authv3.CheckResponse {
	dn := denialFor(d)
	headers := make([]*corev3.HeaderValueOption, 0, 2)
	if dn.challenge != "" {
		headers = append(headers, overwrite("www-authenticate", dn.challenge))
	} else {
		headers = append(headers, overwrite("retry-after", retryAfter))
	}
	headers = append(headers, overwrite("content-type", "application/json"))
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(dn.code), Message: dn.message},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode(dn.status)},
			Headers: headers,
			Body:    dn.body,
		}},
	}
}

// headerSource is where a check finds request headers.
type headerSource interface {
	header(name string) (string, bool)
}

// requestID returns the request's x-request-id if it is sane to log.
func requestID(h headerSource) string {
	id, _ := h.header("x-request-id")
	if len(id) > 128 {
		return ""
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c < 0x21 || c > 0x7e {
			return ""
		}
	}
	return id
}

// record counts, times and logs one decision: one line per check, with
// the reason and the subject but never the token, and the path without
// its query (which may carry secrets).
func (s *Server) record(ctx context.Context, proto int, d decision, elapsed time.Duration, reqID, method, path string) {
	o := d.outcome()
	s.metrics.checks[d.reason].Inc()
	s.metrics.latency[proto][o].Observe(elapsed.Seconds())
	// A policy authz cannot read is a route misconfiguration that denies
	// every request, so it is logged louder than a decision.
	level := slog.LevelInfo
	if d.reason == reasonBadPolicy {
		level = slog.LevelWarn
	}
	if !s.decisions.Enabled(ctx, level) || (o == allowed && !s.logAllow()) {
		return
	}
	path, _, _ = strings.Cut(path, "?")
	attrs := make([]slog.Attr, 0, 11)
	attrs = append(attrs,
		slog.String("request_id", reqID),
		slog.String("protocol", protocolNames[proto]),
		slog.String("route", d.route),
		slog.String("decision", o.String()),
		slog.Int("status", o.httpStatus()),
		slog.String("reason", d.reason.String()),
	)
	if d.id != nil {
		attrs = append(attrs, slog.String("sub", d.id.sub))
	}
	attrs = append(attrs,
		slog.String("method", truncate(method, 16)),
		slog.String("path", truncate(path, 256)),
		slog.Duration("duration", elapsed),
	)
	if d.err != nil {
		attrs = append(attrs, slog.String("err", d.err.Error()))
	}
	s.decisions.LogAttrs(ctx, level, "check", attrs...)
}
