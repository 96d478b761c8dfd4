package authz

import (
	"context"
	"log/slog"
	"net/http"
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

	"github.com/tollgate-dev/tollgate/internal/dpop"
)

// Identity headers authz sets for the upstream on allow.
const (
	HeaderUserID    = "x-user-id"
	HeaderUserName  = "x-user-name"
	HeaderUserRoles = "x-user-roles"
)

func identityHeader(h string) bool {
	return h == HeaderUserID || h == HeaderUserName || h == HeaderUserRoles || h == HeaderUserIssuer
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
	pol, polErr := s.parsePolicy(attrs.GetContextExtensions())
	eh := envoyHeaders{hr}
	ri := requestInfo{method: hr.GetMethod(), path: hr.GetPath(), host: hr.GetHost(), scheme: hr.GetScheme(), headers: eh}
	d := s.decide(ctx, eh, &ri, pol, polErr)
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

// all returns the request's headers as a map, for CEL.
func (e envoyHeaders) all() map[string]string {
	if h := e.r.GetHeaders(); len(h) > 0 || len(e.r.GetHeaderMap().GetHeaders()) == 0 {
		return h
	}
	m := map[string]string{}
	for _, h := range e.r.GetHeaderMap().GetHeaders() {
		v, _ := e.header(h.GetKey())
		m[h.GetKey()] = v
	}
	return m
}

// checkResponse turns a decision into Envoy's answer.
func (s *Server) checkResponse(d decision) *authv3.CheckResponse {
	if d.outcome() != allowed {
		return s.deniedResponse(d)
	}
	return s.okResponse(d.id)
}

// allowParts are the parts of an allow answer that depend only on the
// identity. newIdentity builds them once per verified token, and every
// answer for that token (the cache hands out the same identity) shares
// them, so nothing may modify them afterwards: gRPC only reads a
// response while marshalling it.
type allowParts struct {
	headers  []*corev3.HeaderValueOption // the identity and mapped headers that have a value
	fwd      [][2]string                 // the same, canonical name and value, for forward-auth
	remove   []string                    // the managed headers without a value, then the token headers
	removeFA string                      // remove joined with ",", for forward-auth
	metadata *structpb.Struct            // dynamic metadata for Envoy's access logs
}

// newAllowParts builds id's allowParts. Every header any configured
// issuer's mapping may set is either set or removed, so a client cannot
// smuggle one in under a token from an issuer that does not map it.
func newAllowParts(id *identity) allowParts {
	var p allowParts
	vals := make(map[string]string, 4+len(id.mapped))
	vals[HeaderUserID] = id.sub
	vals[HeaderUserName] = id.name
	vals[HeaderUserRoles] = id.rolesHeader
	vals[HeaderUserIssuer] = id.issuer.name
	for _, h := range id.mapped {
		vals[h[0]] = h[1]
	}
	tokenHeaders := id.issuer.tokenHeaders
	for _, h := range id.issuer.managed {
		if v := vals[h]; v != "" {
			p.headers = append(p.headers, overwrite(h, v))
			p.fwd = append(p.fwd, [2]string{http.CanonicalHeaderKey(h), v})
		} else {
			p.remove = append(p.remove, h)
		}
	}
	// The DPoP proof goes with the token headers, bound token or not.
	p.remove = slices.Clip(append(append(p.remove, tokenHeaders...), dpop.Header))
	p.removeFA = strings.Join(p.remove, ",")
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
			HeadersToRemove: id.allow.remove,
		}},
		DynamicMetadata: id.allow.metadata,
	}
}

// identityMetadata is the dynamic metadata for Envoy's access logs.
func identityMetadata(id *identity) *structpb.Struct {
	f := make(map[string]*structpb.Value, 4)
	f["sub"] = structpb.NewStringValue(id.sub)
	f["issuer"] = structpb.NewStringValue(id.issuer.name)
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
	body      string // {"message": message} and a newline, like every JSON body
}

var (
	denyNoToken = denial{401, codes.Unauthenticated, `Bearer realm="` + Realm + `"`,
		"a valid token is missing", `{"message":"a valid token is missing"}` + "\n"}
	denyInvalid = denial{401, codes.Unauthenticated, `Bearer realm="` + Realm + `", error="invalid_token"`,
		"token is invalid", `{"message":"token is invalid"}` + "\n"}
	// A proof problem (RFC 9449 §7.1's invalid_dpop_proof): the token
	// may be fine, so the client should sign a new proof, not log in again.
	denyInvalidProof = denial{401, codes.Unauthenticated, `Bearer realm="` + Realm + `", error="invalid_token"`,
		"DPoP proof is invalid", `{"message":"DPoP proof is invalid"}` + "\n"}
	denyForbidden = denial{403, codes.PermissionDenied, `Bearer realm="` + Realm + `", error="insufficient_scope"`,
		"insufficient permissions", `{"message":"insufficient permissions"}` + "\n"}
	denyUnavailable = denial{503, codes.Unavailable, "",
		"authorization is unavailable", `{"message":"authorization is unavailable"}` + "\n"}
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
	case d.reason.proofProblem():
		return denyInvalidProof
	}
	return denyInvalid
}

// deniedResponse is the one place a denial becomes a CheckResponse: a
// status Envoy treats as Denied (never an error), the HTTP status, the
// challenges, a DPoP-Nonce when nonces are on, and a short JSON body.
// A second challenge is its own www-authenticate header: the first
// overwrites whatever the local reply had, the next are added
// (APPEND_IF_EXISTS_OR_ADD, which Envoy adds as another header line).
func (s *Server) deniedResponse(d decision) *authv3.CheckResponse {
	dn := denialFor(d)
	challenges, nonce := s.challenges(d)
	headers := make([]*corev3.HeaderValueOption, 0, 2+len(challenges))
	for i, c := range challenges {
		if i == 0 {
			headers = append(headers, overwrite("www-authenticate", c))
		} else {
			headers = append(headers, &corev3.HeaderValueOption{
				Header:       &corev3.HeaderValue{Key: "www-authenticate", Value: c},
				AppendAction: corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD,
			})
		}
	}
	if len(challenges) == 0 {
		headers = append(headers, overwrite("retry-after", retryAfter))
	}
	if nonce {
		headers = append(headers, overwrite("dpop-nonce", s.dpop.Nonces().Current()))
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
