package gateway

import (
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// authzFilter is a compiled ext_authz HTTP filter in gRPC mode.
type authzFilter struct {
	name              string // the http filter's name: the typed_per_filter_config key
	cluster           string
	timeout           time.Duration
	failureModeAllow  bool
	statusOnError     int
	validateMutations bool
}

// defaultAuthzTimeout is GrpcService.timeout's default for ext_authz.
const defaultAuthzTimeout = 200 * time.Millisecond

// mutationAction is how one header mutation applies, after Envoy's
// mapping from HeaderValueOption (HeaderMutationAction in
// ext_authz_grpc_impl.cc, main branch early 2026: spec §2, snapshots B/C).
type mutationAction int

const (
	// mutAppend joins the value to the existing header with ","
	// (appendCopy), adding it when absent: the deprecated append=true on
	// request headers.
	mutAppend mutationAction = iota
	// mutSet discards existing values and adds: OVERWRITE_IF_EXISTS_OR_ADD,
	// or the deprecated append=false.
	mutSet
	// mutAdd adds another header line: APPEND_IF_EXISTS_OR_ADD, the
	// default when append is unset; or append=true on response headers.
	mutAdd
	// mutAddIfAbsent adds only when absent: ADD_IF_ABSENT.
	mutAddIfAbsent
	// mutOverwriteIfExists sets only when present: OVERWRITE_IF_EXISTS.
	mutOverwriteIfExists
)

type headerMutation struct {
	key, value string
	action     mutationAction
}

func (m headerMutation) apply(h *headerMap) {
	switch m.action {
	case mutAppend:
		h.appendValue(m.key, m.value)
	case mutSet:
		h.set(m.key, m.value)
	case mutAdd:
		h.add(m.key, m.value)
	case mutAddIfAbsent:
		if !h.has(m.key) {
			h.add(m.key, m.value)
		}
	case mutOverwriteIfExists:
		if h.has(m.key) {
			h.set(m.key, m.value)
		}
	}
}

// applyHTTP applies m to a response's http.Header.
func (m headerMutation) applyHTTP(h http.Header) {
	switch m.action {
	case mutAppend:
		if v := h.Get(m.key); v != "" {
			h.Set(m.key, v+","+m.value)
		} else {
			h.Add(m.key, m.value)
		}
	case mutSet:
		h.Set(m.key, m.value)
	case mutAdd:
		h.Add(m.key, m.value)
	case mutAddIfAbsent:
		if len(h.Values(m.key)) == 0 {
			h.Add(m.key, m.value)
		}
	case mutOverwriteIfExists:
		if len(h.Values(m.key)) > 0 {
			h.Set(m.key, m.value)
		}
	}
}

// toMutations maps HeaderValueOptions to mutations, in list order. For
// response headers (and local replies) the deprecated append=true means
// adding a header line; for request headers, joining the value. An unknown
// append_action is reported through invalid and applied as a set.
func toMutations(opts []*corev3.HeaderValueOption, response bool, invalid *bool) []headerMutation {
	out := make([]headerMutation, 0, len(opts))
	for _, o := range opts {
		m := headerMutation{key: strings.ToLower(o.GetHeader().GetKey()), value: o.GetHeader().GetValue()}
		if a := o.GetAppend(); a != nil {
			switch {
			case a.GetValue() && response:
				m.action = mutAdd
			case a.GetValue():
				m.action = mutAppend
			default:
				m.action = mutSet
			}
		} else {
			switch o.GetAppendAction() {
			case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
				m.action = mutAdd
			case corev3.HeaderValueOption_ADD_IF_ABSENT:
				m.action = mutAddIfAbsent
			case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
				m.action = mutOverwriteIfExists
			case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
				m.action = mutSet
			default:
				*invalid = true
				m.action = mutSet
			}
		}
		out = append(out, m)
	}
	return out
}

// checkOutcome classifies a Check call (GrpcClientImpl::onSuccess and
// onFailure, spec §2).
type checkOutcome int

const (
	checkOK checkOutcome = iota
	checkDenied
	checkError
	// checkInvalid is a response Envoy refuses with a local 500
	// (rejectResponse: an invalid mutation when validate_mutations is on).
	checkInvalid
)

func (o checkOutcome) String() string {
	return [...]string{"ok", "denied", "error", "invalid"}[o]
}

// checkResult is what the filter does with a Check outcome.
type checkResult struct {
	outcome checkOutcome
	// OK
	requestMutations  []headerMutation
	headersToRemove   []string
	responseMutations []headerMutation
	// Denied: the local reply.
	status         int
	body           string
	localMutations []headerMutation
	// why, for the log
	detail string
}

// interpret maps a CheckResponse to what Envoy does with it.
func interpret(resp *authv3.CheckResponse, validate bool) checkResult {
	var invalid bool
	switch {
	case resp.GetStatus().GetCode() == int32(codes.OK):
		ok := resp.GetOkResponse()
		r := checkResult{
			outcome:           checkOK,
			requestMutations:  toMutations(ok.GetHeaders(), false, &invalid),
			responseMutations: toMutations(ok.GetResponseHeadersToAdd(), true, &invalid),
		}
		for _, k := range ok.GetHeadersToRemove() {
			r.headersToRemove = append(r.headersToRemove, strings.ToLower(k))
		}
		if len(ok.GetQueryParametersToSet()) > 0 || len(ok.GetQueryParametersToRemove()) > 0 {
			// Envoy rebuilds the query string from a parsed map whose
			// ordering and duplicate handling changed between releases;
			// rather than guess, the gateway refuses the request.
			return checkResult{outcome: checkInvalid, detail: "query parameter mutations are not implemented by the dev gateway"}
		}
		if validate {
			if invalid {
				return checkResult{outcome: checkInvalid, detail: "invalid append_action"}
			}
			for _, list := range [][]headerMutation{r.requestMutations, r.responseMutations} {
				if d := invalidMutation(list); d != "" {
					return checkResult{outcome: checkInvalid, detail: d}
				}
			}
			for _, k := range r.headersToRemove {
				if !validHeaderName(k) {
					return checkResult{outcome: checkInvalid, detail: "invalid header name to remove " + strconv.Quote(k)}
				}
			}
		}
		return r
	case resp.GetErrorResponse() != nil:
		return checkResult{outcome: checkError, detail: "error_response"}
	default:
		d := resp.GetDeniedResponse()
		r := checkResult{
			outcome:        checkDenied,
			status:         http.StatusForbidden,
			body:           d.GetBody(),
			localMutations: toMutations(d.GetHeaders(), true, &invalid),
			detail:         "grpc status " + codes.Code(resp.GetStatus().GetCode()).String(),
		}
		if c := int(d.GetStatus().GetCode()); c > 0 {
			r.status = c
		}
		if r.status < 200 || r.status > 599 {
			// Envoy would write any number as the status; a Go server
			// cannot send a 1xx or a status above 599 as the final one.
			return checkResult{outcome: checkInvalid, detail: "denied status " + strconv.Itoa(r.status) + " is not a final HTTP status"}
		}
		if validate {
			if invalid {
				return checkResult{outcome: checkInvalid, detail: "invalid append_action"}
			}
			if d := invalidMutation(r.localMutations); d != "" {
				return checkResult{outcome: checkInvalid, detail: d}
			}
		}
		return r
	}
}

func invalidMutation(list []headerMutation) string {
	for _, m := range list {
		if !validHeaderName(m.key) {
			return "invalid header name " + strconv.Quote(m.key)
		}
		if !validHeaderValue(m.value) {
			return "invalid value for header " + strconv.Quote(m.key)
		}
	}
	return ""
}

// newCheckRequest builds the CheckRequest Envoy sends for a request
// (CheckRequestUtils::createHttpCheck, spec §1).
func newCheckRequest(h *headerMap, src, dst net.Addr, protocol string, streamID uint64, start time.Time, contextExtensions map[string]string) *authv3.CheckRequest {
	headers := map[string]string{}
	for _, e := range h.entries {
		if e.key == "x-envoy-auth-partial-body" {
			continue
		}
		v := sanitizeUTF8(e.value)
		if prev, ok := headers[e.key]; ok {
			headers[e.key] = prev + "," + v
		} else {
			headers[e.key] = v
		}
	}
	return &authv3.CheckRequest{
		Attributes: &authv3.AttributeContext{
			Source:      &authv3.AttributeContext_Peer{Address: socketAddress(src)},
			Destination: &authv3.AttributeContext_Peer{Address: socketAddress(dst)},
			Request: &authv3.AttributeContext_Request{
				Time: timestamppb.New(start),
				Http: &authv3.AttributeContext_HttpRequest{
					Id:       strconv.FormatUint(streamID, 10),
					Method:   sanitizeUTF8(h.value(":method")),
					Headers:  headers,
					Path:     sanitizeUTF8(h.value(":path")),
					Host:     sanitizeUTF8(h.value(":authority")),
					Scheme:   sanitizeUTF8(h.value(":scheme")),
					Protocol: protocol,
					// Size is the body bytes received when the check starts;
					// without with_request_body the check starts at the
					// headers, before any body byte is read.
					Size: 0,
				},
			},
			ContextExtensions: contextExtensions,
			MetadataContext:   &corev3.Metadata{},
		},
	}
}

// sanitizeUTF8 replaces each byte that is not part of valid UTF-8 with '!'
// (MessageUtil::sanitizeUtf8String), since proto strings must be UTF-8.
func sanitizeUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b.WriteByte('!')
		} else {
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

func socketAddress(a net.Addr) *corev3.Address {
	ap, ok := a.(*net.TCPAddr)
	if !ok {
		host, port, err := net.SplitHostPort(a.String())
		if err != nil {
			return nil
		}
		p, _ := strconv.ParseUint(port, 10, 32)
		return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(p)},
		}}}
	}
	ip := ap.IP
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip.String(), PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(ap.Port)},
	}}}
}

// protocolString is Envoy's getProtocolString for the request's protocol.
func protocolString(r *http.Request) string {
	switch {
	case r.ProtoMajor == 2:
		return "HTTP/2"
	case r.ProtoMajor == 3:
		return "HTTP/3"
	case r.ProtoMajor == 1 && r.ProtoMinor == 0:
		return "HTTP/1.0"
	}
	return "HTTP/1.1"
}
