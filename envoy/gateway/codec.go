package gateway

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Envoy's HTTP/1 codec refuses some requests before its connection manager
// sees them, and net/http reads exactly those differently: given both
// Content-Length and Transfer-Encoding: chunked it drops the Content-Length
// and reads the body as chunked, and it keeps one of several equal
// Content-Length lines (net/http/transfer.go, fixLength). Neither is visible
// in the parsed request. So the gateway's listener checks every HTTP/1
// request head on the connection, before net/http parses it, the way
// Envoy's codec does (codecConn).

// codecError is a request Envoy's HTTP/1 codec refuses
// (ServerConnectionImpl::sendProtocolError in
// source/common/http/http1/codec_impl.cc): the status of its local reply,
// whose body is the status text, and its response code details. The
// codecConn also refuses a head that outlasts request_headers_timeout.
type codecError struct {
	status  int
	details string
	body    string // when not the status text
}

func (e *codecError) Error() string {
	return "http/1.1 protocol error: " + e.details
}

// The refusals, with the details Envoy logs for them.
var (
	// Anything balsa_frame.cc's parser refuses: repeated or unparsable
	// Content-Length, a malformed chunk, a malformed request line.
	errCodec = &codecError{http.StatusBadRequest, "http1.codec_error", ""}
	// Both Content-Length and Transfer-Encoding, allow_chunked_length off.
	errContentLengthAndChunked = &codecError{http.StatusBadRequest, "http1.content_length_and_chunked_not_allowed", ""}
	// A Transfer-Encoding other than exactly "chunked".
	errInvalidTransferEncoding = &codecError{http.StatusNotImplemented, "http1.invalid_transfer_encoding", ""}
	// A CONNECT with a body.
	errBodyDisallowed = &codecError{http.StatusBadRequest, "http1.body_disallowed", ""}
	// A head over max_request_headers_kb.
	errHeadersTooLarge = &codecError{http.StatusRequestHeaderFieldsTooLarge, "http1.headers_too_large", ""}
	// Not HTTP/1.1, accept_http_10 off.
	errLowVersion = &codecError{http.StatusUpgradeRequired, "low_version", ""}
	// A head still incomplete at request_headers_timeout
	// (conn_manager_impl.cc ActiveStream::onRequestHeaderTimeout).
	errRequestHeaderTimeout = &codecError{http.StatusRequestTimeout, "request_header_timeout", "request header timeout"}
)

// codecErrorByDetails finds a refusal from its details, as the stand-in
// request carries it.
func codecErrorByDetails(details string) *codecError {
	for _, e := range []*codecError{errContentLengthAndChunked, errInvalidTransferEncoding, errBodyDisallowed, errHeadersTooLarge, errLowVersion, errRequestHeaderTimeout} {
		if e.details == details {
			return e
		}
	}
	return errCodec
}

// flagDownstreamProtocolError is Envoy's response flag for a request its
// codec refused.
const flagDownstreamProtocolError = "DPE"

// delayedCloseTimeout is how long a connection closing after a codec error
// waits for the client to finish sending (HCM delayed_close_timeout).
const delayedCloseTimeout = time.Second

// codecListener hands net/http connections whose HTTP/1 request heads pass
// Envoy's codec checks first (see codecConn).
type codecListener struct {
	net.Listener
	marker      string        // header naming a refusal in the stand-in request
	headTimeout time.Duration // request_headers_timeout; 0 for none
}

func (l *codecListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &codecConn{Conn: c, br: bufio.NewReader(c), marker: l.marker, headTimeout: l.headTimeout}, nil
}

type codecState int

const (
	readingHead    codecState = iota
	readingLength             // a body of remaining bytes
	readingChunked            // a chunked body
	passingThrough            // HTTP/2 with prior knowledge
)

// codecConn is a client connection as net/http reads it. It holds each
// HTTP/1 request head back until the whole head has arrived and passed
// checkHead, then hands it on unchanged. It hands bodies on as net/http
// reads them: a Content-Length body byte for byte, a chunked one decoded
// with Go's own chunked reader and framed anew (readChunk), so that where
// each request ends is decided here, once, and the next head is checked
// too. An HTTP/2 connection passes through untouched.
//
// A refused head never reaches net/http. In its place net/http reads a
// stand-in request naming the refusal in the marker header, then the end
// of the connection; ServeHTTP answers the stand-in with Envoy's local
// reply. So the reply goes out in turn, after the responses to any earlier
// pipelined requests, and the bytes after the refused head are never read
// as a request.
type codecConn struct {
	net.Conn
	br          *bufio.Reader
	marker      string
	headTimeout time.Duration

	// Read state. net/http reads from one goroutine at a time.
	state     codecState
	heads     int       // heads handed on so far
	head      []byte    // the head read so far
	out       []byte    // what net/http reads next
	outBuf    []byte    // backing store of out for framed chunks
	remaining int64     // readingLength
	chunks    io.Reader // readingChunked: the client's chunks, decoded
	chunk     []byte
	err       error // returned once out is drained; the connection is done

	mu           sync.Mutex // read deadlines; net/http sets them from any goroutine
	readDeadline time.Time  // net/http's
	headDeadline time.Time  // request_headers_timeout of the head being read

	refused     atomic.Bool // a request was refused; linger on Close
	bodyRefused atomic.Bool // the refusal was in a body net/http had started to read
	lingering   atomic.Bool
}

func (c *codecConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for len(c.out) == 0 {
		if c.err != nil {
			return 0, c.err
		}
		switch c.state {
		case passingThrough:
			return c.br.Read(p)
		case readingLength:
			return c.readLength(p)
		case readingChunked:
			c.readChunk()
		default:
			if err := c.readHead(); err != nil {
				return 0, err
			}
		}
	}
	n := copy(p, c.out)
	c.out = c.out[n:]
	return n, nil
}

func (c *codecConn) readLength(p []byte) (int, error) {
	if int64(len(p)) > c.remaining {
		p = p[:c.remaining]
	}
	n, err := c.br.Read(p)
	c.remaining -= int64(n)
	if c.remaining == 0 {
		c.state = readingHead
	}
	return n, err
}

// readHead reads the next request head and sets out to it, or to the
// stand-in for a refused one. It returns an error only from the
// connection itself (a deadline, the client gone), keeping what it has
// read, so that the next call carries on.
func (c *codecConn) readHead() error {
	for {
		if len(c.head) == 0 {
			b, err := c.br.Peek(1)
			if err != nil {
				return err
			}
			if b[0] == '\r' || b[0] == '\n' {
				// Envoy's parser skips empty lines before a request
				// (RFC 9112 section 2.2).
				c.br.Discard(1)
				continue
			}
			if c.headTimeout > 0 {
				// request_headers_timeout runs from the head's first byte.
				// net/http cannot time a head it has not been given.
				c.setHeadDeadline(time.Now().Add(c.headTimeout))
			}
		}
		line, err := c.br.ReadSlice('\n')
		c.head = append(c.head, line...)
		if len(c.head) > maxRequestHeaders {
			c.refuse(errHeadersTooLarge)
			return nil
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil {
			if c.headTimedOut(err) {
				c.refuse(errRequestHeaderTimeout)
				return nil
			}
			return err
		}
		if bytes.HasSuffix(c.head, []byte("\n\n")) || bytes.HasSuffix(c.head, []byte("\n\r\n")) {
			break
		}
	}
	c.setHeadDeadline(time.Time{})
	head := c.head
	c.head = nil
	f, refusal := checkHead(head)
	if refusal == nil && f.chunked && malformedChunks(c.buffered()) {
		refusal = errCodec
	}
	switch {
	case refusal != nil:
		c.refuse(refusal)
		return nil
	case f.http2:
		c.state = passingThrough
	case f.chunked:
		c.state, c.chunks = readingChunked, httputil.NewChunkedReader(c.br)
	case f.length > 0:
		c.state, c.remaining = readingLength, f.length
	}
	c.out = head
	c.heads++
	return nil
}

// headTimedOut reports whether err, from reading a head that has begun,
// is request_headers_timeout: the head's own deadline, or on a new
// connection net/http's ReadHeaderTimeout. Other deadlines are net/http's
// to handle, such as the one that stops its read for a pipelined request
// while a handler runs.
func (c *codecConn) headTimedOut(err error) bool {
	var ne net.Error
	if len(c.head) == 0 || !errors.As(err, &ne) || !ne.Timeout() {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.heads == 0 || !c.headDeadline.IsZero() && !time.Now().Before(c.headDeadline)
}

// buffered is what has arrived and not been read yet.
func (c *codecConn) buffered() []byte {
	b, _ := c.br.Peek(c.br.Buffered())
	return b
}

// readChunk decodes the next part of a chunked body and sets out to it,
// framed as one chunk. Trailers are read and dropped, as Envoy does with
// enable_trailers off.
func (c *codecConn) readChunk() {
	if c.chunk == nil {
		c.chunk = make([]byte, 32<<10)
	}
	n, err := c.chunks.Read(c.chunk)
	buf := c.outBuf[:0]
	if n > 0 {
		buf = strconv.AppendInt(buf, int64(n), 16)
		buf = append(buf, "\r\n"...)
		buf = append(buf, c.chunk[:n]...)
		buf = append(buf, "\r\n"...)
	}
	if err == io.EOF {
		if _, err = textproto.NewReader(c.br).ReadMIMEHeader(); err == nil {
			buf = append(buf, "0\r\n\r\n"...)
			c.state, c.chunks = readingHead, nil
		}
	}
	if err != nil {
		c.err = c.bodyError(err)
	}
	c.outBuf, c.out = buf, buf
}

// bodyError sorts an error from reading a body: the connection failing
// (the client gone, a deadline) is passed on as it is; anything else is
// the client's framing, which Envoy's codec refuses with 400.
func (c *codecConn) bodyError(err error) error {
	var ne net.Error
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) || errors.As(err, &ne) {
		return err
	}
	c.refused.Store(true)
	c.bodyRefused.Store(true)
	return errCodec
}

// refuse replaces what net/http reads from here on with the stand-in
// request for e, followed by the end of the connection.
func (c *codecConn) refuse(e *codecError) {
	c.setHeadDeadline(time.Time{})
	c.head = nil
	c.out = []byte("GET / HTTP/1.1\r\nHost: gateway\r\n" + c.marker + ": " + e.details + "\r\n\r\n")
	c.err = io.EOF
	c.refused.Store(true)
}

// SetReadDeadline records net/http's read deadline; a read of a request
// head also ends at the head's request_headers_timeout.
func (c *codecConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.readDeadline = t
	return c.applyReadDeadline()
}

func (c *codecConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.Conn.SetWriteDeadline(t)
}

func (c *codecConn) setHeadDeadline(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.Equal(c.headDeadline) {
		return
	}
	c.headDeadline = t
	c.applyReadDeadline()
}

func (c *codecConn) applyReadDeadline() error {
	d := c.readDeadline
	if !c.headDeadline.IsZero() && (d.IsZero() || c.headDeadline.Before(d)) {
		d = c.headDeadline
	}
	return c.Conn.SetReadDeadline(d)
}

// CloseWrite half-closes the connection, which net/http does before
// closing one whose request body it did not finish reading.
func (c *codecConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// Close closes the connection. After a refusal it first half-closes it
// and reads what the client is still sending, for up to
// delayedCloseTimeout, as Envoy closes after a codec error
// (FlushWriteAndDelay): closing with unread bytes would reset the
// connection, and the client could lose the reply.
func (c *codecConn) Close() error {
	if c.refused.Load() && c.lingering.CompareAndSwap(false, true) {
		c.CloseWrite()
		c.Conn.SetReadDeadline(time.Now().Add(delayedCloseTimeout))
		io.Copy(io.Discard, c.Conn)
	}
	return c.Conn.Close()
}

// headFraming is how a request's body is delimited.
type headFraming struct {
	http2   bool // the HTTP/2 connection preface: not HTTP/1 from here on
	chunked bool
	length  int64
}

// checkHead makes, in Envoy's order, the checks Envoy's HTTP/1 codec makes
// of a request head before its connection manager sees the request, with
// the http_protocol_options defaults the gateway runs with
// (allow_chunked_length and accept_http_10 off), and says how the body is
// framed. The sources are source/common/http/http1/balsa_parser.cc,
// quiche's balsa_frame.cc (ProcessHeaderLines,
// AssignParseStateAfterHeadersHaveBeenParsed) and codec_impl.cc
// (ConnectionImpl::onHeadersCompleteImpl,
// ServerConnectionImpl::checkProtocolVersion). Everything else in the head
// is left to net/http and the connection manager.
func checkHead(head []byte) (headFraming, *codecError) {
	requestLine, fields, _ := strings.Cut(string(head), "\n")
	requestLine = strings.TrimSuffix(requestLine, "\r")
	if requestLine == "PRI * HTTP/2.0" {
		return headFraming{http2: true}, nil
	}
	method, rest, ok := strings.Cut(requestLine, " ")
	if !ok {
		return headFraming{}, errCodec
	}
	// No version is HTTP/0.9, refused below as not HTTP/1.1.
	_, version, hasVersion := strings.Cut(rest, " ")
	if hasVersion && !validHTTPVersion(version) {
		return headFraming{}, errCodec
	}

	var lengths, encodings []string
	var last *string // the value of the framing header on the line before
	for line := range strings.Lines(fields) {
		line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
		if line == "" {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			// obs-fold continues the line before.
			if last != nil {
				*last += " " + textproto.TrimString(line)
			}
			continue
		}
		name, value, _ := strings.Cut(line, ":")
		value = textproto.TrimString(value)
		switch {
		case equalFoldASCII(name, "Content-Length"):
			lengths = append(lengths, value)
			last = &lengths[len(lengths)-1]
		case equalFoldASCII(name, "Transfer-Encoding"):
			encodings = append(encodings, value)
			last = &encodings[len(encodings)-1]
		default:
			last = nil
		}
	}

	// A second Content-Length, equal or not (disallow_multiple_content_length).
	if len(lengths) > 1 {
		return headFraming{}, errCodec
	}
	// The last Transfer-Encoding line says whether the body is chunked;
	// then Content-Length is not parsed.
	chunked := len(encodings) > 0 && equalFoldASCII(encodings[len(encodings)-1], "chunked")
	var length int64
	if len(lengths) == 1 && !chunked {
		n, err := strconv.ParseUint(lengths[0], 10, 63)
		if err != nil {
			return headFraming{}, errCodec
		}
		length = int64(n)
	}
	connect := method == http.MethodConnect
	if connect && len(lengths) == 1 {
		if lengths[0] != "0" {
			return headFraming{}, errBodyDisallowed
		}
		lengths = nil // removed
	}
	if len(encodings) > 0 && len(lengths) > 0 {
		return headFraming{}, errContentLengthAndChunked
	}
	// Envoy's header map joins repeated lines with ","; only exactly
	// "chunked" is understood.
	if len(encodings) > 0 && (connect || !equalFoldASCII(strings.Join(encodings, ","), "chunked")) {
		return headFraming{}, errInvalidTransferEncoding
	}
	if !hasVersion || version != "HTTP/1.1" {
		return headFraming{}, errLowVersion
	}
	return headFraming{chunked: chunked, length: length}, nil
}

// validHTTPVersion reports whether v is "HTTP/" digit "." digit
// (balsa_parser.cc isVersionValid).
func validHTTPVersion(v string) bool {
	return len(v) == len("HTTP/1.1") && strings.HasPrefix(v, "HTTP/") &&
		isDigit(v[5]) && v[6] == '.' && isDigit(v[7])
}

func isDigit(b byte) bool { return '0' <= b && b <= '9' }

// equalFoldASCII is strings.EqualFold for an ASCII want: a non-ASCII
// letter that folds to an ASCII one (the long s, the Kelvin sign) does
// not count.
func equalFoldASCII(s, want string) bool {
	return len(s) == len(want) && strings.EqualFold(s, want)
}

// malformedChunks reports whether the part of a chunked body that has
// arrived already breaks the chunked framing. Envoy's codec parses all it
// has read before its connection manager can forward anything, so a
// request whose bad chunk came with its head is refused before the check
// or an upstream hear of it.
func malformedChunks(b []byte) bool {
	_, err := io.Copy(io.Discard, httputil.NewChunkedReader(bytes.NewReader(b)))
	return err != nil && !errors.Is(err, io.ErrUnexpectedEOF)
}

type codecConnKey struct{}

// withCodecConn is http.Server.ConnContext: it lets a request find its
// connection's codec state.
func withCodecConn(ctx context.Context, c net.Conn) context.Context {
	if cc, ok := c.(*codecConn); ok {
		return context.WithValue(ctx, codecConnKey{}, cc)
	}
	return ctx
}

// bodyRefused reports whether the codec refused r's body, which net/http
// then reports to whoever reads it as a failed read.
func bodyRefused(r *http.Request) bool {
	cc, _ := r.Context().Value(codecConnKey{}).(*codecConn)
	return cc != nil && cc.bodyRefused.Load()
}
