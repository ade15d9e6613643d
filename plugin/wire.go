package plugin

// The wire (protocol minor 4): the Calls messages (pb.CallRequest, pb.CallResponse: the same
// ids, deadlines, cancels and errors as on the Calls stream) on a plain Unix-domain socket
// between host and plugin, each framed as a 4-byte big-endian length and the protobuf bytes.
//
// Why hand-written framing, when gRPC already carries these messages: measured with
// BenchmarkHop (per op one webhook and one send to a real plugin subprocess; this project's
// 2-core VM; the Calls stream's build and the wire's run in turn, medians of three), one call
// alone costs about 40 µs of CPU on each side on the Calls stream (80 µs host + 81 plugin per
// op) and 21 µs host + 31 µs plugin on the wire (43 + 63 per op), 31 allocations per op
// instead of 53; BenchmarkSend/subprocess 39 µs instead of 60, 11 allocations instead of 22.
// With 8 callers at once both cost the same (about 23 + 25 µs per op): there gRPC's writer
// goroutine batches frames into one write, which this does not. What the wire drops is TLS
// records, HTTP/2 frames and window updates, and the goroutine hand-offs (gRPC's loopy writer
// and reader; on the host, callStream.readTok's callers read their own responses); what is
// left is system calls and thread wake-ups (read, write, epoll_wait, futex: over half of
// either process's CPU in BenchmarkHop's profiles), which any transport between two
// processes pays. Under bench/load at 2,000 webhooks/s the CPU per event fell by 6-25 µs
// (plugin 62-65 µs instead of 68-70), within that run's noise of about 15.
//
// Setup goes through the gRPC connection, which go-plugin authenticates (AutoMTLS): the host
// sends a fresh random token in OpenWire; the plugin listens on a socket in a new directory
// only its user can enter (0700), answers the socket's path and accepts one connection that
// starts with the token (compared in constant time) within wireAcceptTimeout, answering it
// one byte (wireAccepted); then it closes the listener and removes the socket and its
// directory. A connection without the token is closed unserved and the plugin keeps waiting
// for the host's until the timeout: a local process that races the host to the socket (it
// would have to run as the plugin's user: the directory is 0700) cannot take the wire, and a
// connection that sends nothing holds the accept loop for at most wireTokenWait, not until
// the timeout. The token is never logged.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/seed-a64d9e1f/chatwire/plugin/proto"
)

// minorWire is the first ProtocolMinor whose plugins serve OpenWire.
const minorWire = 4

const (
	// wireTokenSize is the length of the host's token, from crypto/rand.
	wireTokenSize = 32
	// wireAccepted is the byte the plugin answers a connection whose token it accepted.
	wireAccepted = 1
	// wireReadBuffer is each side's read buffer: a frame up to this size is decoded in place.
	wireReadBuffer = 64 << 10
	// maxWireFrame bounds a frame's length: a longer one is a protocol error that closes the
	// connection. It is the gRPC message limit, so the wire carries whatever answer the Calls
	// stream would (a plugin's answer is not bounded by maxStreamedCall, which bounds calls).
	maxWireFrame = MaxMessageSize
	// cancelWriteTimeout bounds the write of a cancel frame, which has no caller's deadline.
	cancelWriteTimeout = 5 * time.Second
	// wireSocketName is the socket's name in its directory.
	wireSocketName = "wire.sock"
	// wireDirPattern names the directories of the plugin's wire sockets.
	wireDirPattern = "chatwire-wire-*"
)

// wireAcceptTimeout bounds how long a plugin waits for the host's connection, and the host
// for OpenWire, its dial and the plugin's wireAccepted; a variable for a test.
var wireAcceptTimeout = 10 * time.Second

// errWireProtocol marks a peer that broke the framing: the connection is closed.
var errWireProtocol = errors.New("plugin wire: protocol error")

// framePool holds buffers frames are marshalled into.
var framePool = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// appendFrame appends m's frame (length and bytes) to buf[:0]. It fails, with buf still
// usable, when m cannot be marshalled or is over maxWireFrame.
func appendFrame(buf []byte, m proto.Message) ([]byte, error) {
	buf = append(buf[:0], 0, 0, 0, 0)
	buf, err := proto.MarshalOptions{}.MarshalAppend(buf, m)
	if err != nil {
		return buf, err
	}
	n := len(buf) - 4
	if n > maxWireFrame {
		return buf, status.Errorf(codes.ResourceExhausted, "plugin wire: a message of %d bytes is over the limit of %d", n, maxWireFrame)
	}
	binary.BigEndian.PutUint32(buf, uint32(n))
	return buf, nil
}

// frameError is appendFrame's error as a status error.
func frameError(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Errorf(codes.Internal, "plugin wire: %v", err)
}

// putFrame returns a buffer from framePool, unless it grew too big to keep.
func putFrame(bp *[]byte, b []byte) {
	if cap(b) > wireReadBuffer {
		return
	}
	*bp = b[:0]
	framePool.Put(bp)
}

// frameReader reads frames off one connection; one goroutine at a time. A read that fails
// (a deadline, the wire's interrupt) can be resumed: a frame read in part is kept.
type frameReader struct {
	r    *bufio.Reader
	used int    // bytes of r's buffer the last frame returned still holds
	n    int    // the length of the frame whose header was read; -1: none
	big  []byte // a frame over r's size, read in part (got bytes)
	got  int
}

func newFrameReader(r io.Reader) *frameReader {
	return &frameReader{r: bufio.NewReaderSize(r, wireReadBuffer), n: -1}
}

// next returns the next frame's bytes, valid until the following call.
func (f *frameReader) next() ([]byte, error) {
	if f.used > 0 {
		f.r.Discard(f.used)
		f.used = 0
	}
	if f.n < 0 {
		hdr, err := f.r.Peek(4)
		if err != nil {
			if errors.Is(err, io.EOF) && len(hdr) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		n := int(binary.BigEndian.Uint32(hdr))
		if n > maxWireFrame {
			return nil, fmt.Errorf("%w: a frame of %d bytes is over the limit of %d", errWireProtocol, n, maxWireFrame)
		}
		f.r.Discard(4)
		f.n = n
	}
	if f.n <= f.r.Size() { // decoded in place: proto.Unmarshal copies what it keeps
		b, err := f.r.Peek(f.n)
		if err != nil {
			return nil, unexpectedEOF(err)
		}
		f.used, f.n = f.n, -1
		return b, nil
	}
	if f.big == nil {
		f.big, f.got = make([]byte, f.n), 0
	}
	m, err := io.ReadFull(f.r, f.big[f.got:])
	f.got += m
	if err != nil {
		return nil, unexpectedEOF(err)
	}
	b := f.big
	f.big, f.n = nil, -1
	return b, nil
}

func unexpectedEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// notSent is a send's error when nothing of the call reached the transport, which is intact:
// only that call fails, with err (a status error).
type notSent struct{ err error }

func (e notSent) Error() string { return e.err.Error() }

// wireConn is the host's side of the wire, a callStream's transport.
type wireConn struct {
	conn net.Conn
	fr   *frameReader // the receive goroutine's
	// guarded by callStream.sendSem:
	wbuf []byte
	wdl  time.Time // the write deadline set on conn
}

func newWireConn(conn net.Conn) *wireConn {
	return &wireConn{conn: conn, fr: newFrameReader(conn), wbuf: make([]byte, 0, 4<<10)}
}

// send writes req's frame with one Write, giving up at deadline (zero: never). A write that
// times out before any byte left leaves the wire intact (notSent); one that times out part
// way has torn the framing: it closes the connection, which fails every call in flight as
// unavailable. So a plugin that stopped reading holds no sender past its deadline.
func (w *wireConn) send(req *pb.CallRequest, deadline time.Time) error {
	b, err := appendFrame(w.wbuf, req)
	if err != nil {
		return notSent{frameError(err)}
	}
	if cap(b) <= wireReadBuffer {
		w.wbuf = b[:0]
	} else {
		w.wbuf = nil // a rare big call: not kept
	}
	if !deadline.Equal(w.wdl) {
		w.conn.SetWriteDeadline(deadline)
		w.wdl = deadline
	}
	n, err := w.conn.Write(b)
	if err == nil {
		return nil
	}
	if n == 0 && errors.Is(err, os.ErrDeadlineExceeded) {
		return notSent{status.FromContextError(context.DeadlineExceeded).Err()}
	}
	w.conn.Close()
	return err
}

func (w *wireConn) recv() (*pb.CallResponse, error) {
	b, err := w.fr.next()
	if err != nil {
		return nil, err
	}
	r := new(pb.CallResponse)
	if err := proto.Unmarshal(b, r); err != nil {
		return nil, fmt.Errorf("%w: a response that does not decode: %v", errWireProtocol, err)
	}
	return r, nil
}

func (w *wireConn) close() { w.conn.Close() }

// interrupt makes the wire's read in progress, if any, fail with os.ErrDeadlineExceeded.
func (w *wireConn) interrupt() { w.conn.SetReadDeadline(time.Unix(1, 0)) }

// openWire asks the plugin for the wire and connects to it.
func (c *Client) openWire(ctx context.Context) (*wireConn, error) {
	token := make([]byte, wireTokenSize)
	rand.Read(token) // never fails (crypto/rand)
	ctx, cancel := context.WithTimeout(ctx, wireAcceptTimeout)
	defer cancel()
	r, err := c.rpc.OpenWire(ctx, &pb.OpenWireRequest{Token: token})
	if err != nil {
		return nil, fmt.Errorf("OpenWire: %w", err)
	}
	if r.Network != "unix" {
		return nil, fmt.Errorf("the plugin offered a wire on network %q; want unix", r.Network)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", r.Address)
	if err != nil {
		return nil, err
	}
	dl, _ := ctx.Deadline()
	conn.SetDeadline(dl)
	var ack [1]byte
	if _, err = conn.Write(token); err == nil {
		if _, err = io.ReadFull(conn, ack[:]); err == nil && ack[0] != wireAccepted {
			err = fmt.Errorf("the plugin answered %d to the token; want %d", ack[0], wireAccepted)
		}
	}
	if err != nil {
		conn.Close()
		if errors.Is(err, io.EOF) {
			err = errors.New("the plugin refused the token")
		}
		return nil, fmt.Errorf("opening the wire: %w", err)
	}
	conn.SetDeadline(time.Time{})
	return newWireConn(conn), nil
}

// OpenWire implements the OpenWire RPC: it listens for the host's wire connection, which it
// serves in the background once the host connected with req.Token.
func (s *Server) OpenWire(ctx context.Context, req *pb.OpenWireRequest) (*pb.OpenWireResponse, error) {
	if len(req.Token) != wireTokenSize {
		return nil, status.Errorf(codes.InvalidArgument, "plugin: a wire token has %d bytes", wireTokenSize)
	}
	base := os.Getenv("PLUGIN_UNIX_SOCKET_DIR") // as go-plugin does
	if base == "" {
		base = os.TempDir()
	}
	dir, err := os.MkdirTemp(base, wireDirPattern) // mode 0700
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "plugin: wire directory: %v", err)
	}
	path := filepath.Join(dir, wireSocketName)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		os.Remove(dir)
		return nil, status.Errorf(codes.Unavailable, "plugin: wire socket: %v", err)
	}
	ln.SetUnlinkOnClose(true)
	s.wires.Add(1)
	go s.acceptWire(ln, dir, bytes.Clone(req.Token), time.Now().Add(wireAcceptTimeout))
	return &pb.OpenWireResponse{Network: "unix", Address: path}, nil
}

// acceptWire waits for the connection with token, removes the socket and serves it.
func (s *Server) acceptWire(ln *net.UnixListener, dir string, token []byte, deadline time.Time) {
	defer s.wires.Add(-1)
	conn := s.acceptToken(ln, token, deadline)
	ln.Close() // removes the socket file
	if err := os.Remove(dir); err != nil {
		s.log.Warn("removing the wire socket's directory", "dir", dir, "error", err)
	}
	if conn == nil {
		s.log.Warn("the host did not connect to the wire in time; it uses the Calls stream")
		return
	}
	s.serveWire(conn)
}

// wireTokenWait is how long a wire connection has to send its token.
const wireTokenWait = time.Second

// acceptToken returns the first connection that sends token before deadline, or nil.
func (s *Server) acceptToken(ln *net.UnixListener, token []byte, deadline time.Time) net.Conn {
	ln.SetDeadline(deadline)
	got := make([]byte, len(token))
	for {
		conn, err := ln.Accept()
		if err != nil {
			return nil
		}
		// The host writes the token as soon as it has connected: a connection that does not
		// gets wireTokenWait, so it cannot keep the host's waiting until the deadline.
		wait := time.Now().Add(wireTokenWait)
		if deadline.Before(wait) {
			wait = deadline
		}
		conn.SetDeadline(wait)
		_, err = io.ReadFull(conn, got)
		if err == nil && subtle.ConstantTimeCompare(got, token) == 1 {
			if _, err := conn.Write([]byte{wireAccepted}); err == nil {
				conn.SetDeadline(time.Time{})
				return conn
			}
		} else {
			s.log.Warn("refused a wire connection without the host's token")
		}
		conn.Close()
	}
}

// wireServer is the plugin's side of the wire.
type wireServer struct {
	s    *Server
	conn net.Conn
	fr   *frameReader // serveCalls' loop's
	mu   sync.Mutex   // one Write at a time
}

// serveWire serves the calls on conn until it ends; then it cancels those still running.
func (s *Server) serveWire(conn net.Conn) {
	s.wireMu.Lock()
	if s.wireConns == nil {
		s.wireConns = make(map[net.Conn]struct{})
	}
	s.wireConns[conn] = struct{}{}
	s.wireMu.Unlock()
	defer func() {
		s.wireMu.Lock()
		delete(s.wireConns, conn)
		s.wireMu.Unlock()
		conn.Close()
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	err := s.serveCalls(ctx, &wireServer{s: s, conn: conn, fr: newFrameReader(conn)})
	if errors.Is(err, errWireProtocol) {
		s.log.Warn("closing the wire", "error", err)
	}
}

// closeWires closes the wires being served.
func (s *Server) closeWires() {
	s.wireMu.Lock()
	defer s.wireMu.Unlock()
	for conn := range s.wireConns {
		conn.Close()
	}
}

func (w *wireServer) recv() (*pb.CallRequest, error) {
	b, err := w.fr.next()
	if err != nil {
		return nil, err
	}
	r := new(pb.CallRequest)
	if err := proto.Unmarshal(b, r); err != nil {
		return nil, fmt.Errorf("%w: a call that does not decode: %v", errWireProtocol, err)
	}
	w.s.wireCalls.Add(1)
	return r, nil
}

// send writes r's frame with one Write; an answer that cannot be framed (over maxWireFrame)
// answers the call with its error instead.
func (w *wireServer) send(r *pb.CallResponse) error {
	bp := framePool.Get().(*[]byte)
	b, err := appendFrame(*bp, r)
	if err != nil {
		b, err = appendFrame(b, &pb.CallResponse{Id: r.Id, Result: callError(frameError(err))})
		if err != nil {
			putFrame(bp, b)
			return err
		}
	}
	w.mu.Lock()
	_, err = w.conn.Write(b)
	w.mu.Unlock()
	putFrame(bp, b)
	return err
}
