package plugin

// The Calls stream (protocol minor 3): the host's Send and HandleWebhook calls to a plugin
// travel as messages with request ids on one long-lived bidirectional gRPC stream instead of
// one unary RPC each. A unary RPC opens an HTTP/2 stream per call, with headers, trailers,
// a server stream context and their allocations on both sides: measured with BenchmarkHop, the
// stream costs both processes markedly less CPU per call. Everything a unary call promises
// holds: the host gets the plugin's answer before it returns; the caller's deadline reaches
// the plugin (timeout_micros) and a caller that gives up cancels the call there (cancel); a
// panic fails only its call; a plugin that crashes or is killed fails every call in flight
// as unavailable; a hung one leaves callers to their deadlines, which start a health check
// (Plugin.checkAfter) as before. Since protocol minor 4 the same messages take the wire
// (wire.go) when the plugin opens one, and this stream when it does not.

import (
	"context"
	"errors"
	"io"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	pb "github.com/seed-a64d9e1f/chatwire/plugin/proto"
)

// minorCalls is the first ProtocolMinor whose plugins serve the Calls stream.
const minorCalls = 3

// maxStreamedCall bounds the calls the stream carries: a bigger one (a send with large
// attachments, a big webhook body) is a unary RPC, so it never holds up the small calls
// queued behind it on the stream.
const maxStreamedCall = 64 << 10

// callConn is the transport of a callStream: the Calls gRPC stream or the wire (wire.go).
type callConn interface {
	// send sends req, giving up at deadline (zero: never) where the transport can; one at a
	// time (callStream.sendSem). A notSent error fails only req, which the plugin never saw;
	// any other means the transport ended, and recv says why.
	send(req *pb.CallRequest, deadline time.Time) error
	// recv returns the next response; its error ends the transport.
	recv() (*pb.CallResponse, error)
	// close ends the transport: recv fails from then on.
	close()
}

// grpcCalls is the Calls gRPC stream as a callConn.
type grpcCalls struct {
	st     pb.AdapterService_CallsClient
	cancel context.CancelFunc // ends the stream
}

// send blocks only while the stream's flow-control window is full: a plugin that stopped
// reading 4 MiB of calls ago, that is a hung one (its Calls loop never waits for a call to
// finish). Calls behind it wait for sendSem until their deadlines, which start the health
// check that replaces such a plugin, ending the stream; this one waits until then, past its
// own deadline (the wire's send does not).
func (g *grpcCalls) send(req *pb.CallRequest, _ time.Time) error { return g.st.Send(req) }
func (g *grpcCalls) recv() (*pb.CallResponse, error)             { return g.st.Recv() }
func (g *grpcCalls) close()                                      { g.cancel() }

// callStream is the host's side of one Calls stream or wire.
//
// A gRPC stream's responses are read by a goroutine of its own (receive), which hands each to
// its caller. A wire has no such goroutine: one of the callers waiting for a response reads
// the wire (it holds readTok) and hands the others theirs, until its own comes, then leaves
// the reading to another waiting caller. A call alone on the wire so reads its own response,
// with no goroutine hand-off: BenchmarkHop's sequential host CPU per op fell from about 64 µs
// to 41 with this (a hand-off is a goroutine and a thread woken, futex and scheduler time).
// (The plugin's reader does hand each call to a worker: serving a webhook in the reader, with
// a timer to hand the reading over if it took long, cost more than it saved: each timer woke
// the netpoller.)
type callStream struct {
	conn    callConn
	sendSem chan struct{} // holds a token while a goroutine sends on conn (one at a time)
	readTok chan struct{} // the wire's: holds a token while a caller reads conn; nil: receive reads
	done    chan struct{} // closed when the stream failed; err says why

	mu      sync.Mutex // guards the fields below
	err     error
	next    uint64
	pending map[uint64]chan *pb.CallResponse // calls sent and not answered, by id
}

// newCallStream returns the callStream of conn; the caller starts receive for a gRPC stream.
func newCallStream(conn callConn) *callStream {
	cs := &callStream{conn: conn, sendSem: make(chan struct{}, 1), done: make(chan struct{}),
		pending: make(map[uint64]chan *pb.CallResponse)}
	if _, ok := conn.(*wireConn); ok {
		cs.readTok = make(chan struct{}, 1)
	}
	return cs
}

// errClientClosed fails the calls of a closed Client.
var errClientClosed = status.Error(codes.Unavailable, "plugin: client closed")

// calls returns the callStream a call takes, opening it if need be: the wire when it is open,
// else the gRPC Calls stream; nil and no error when the plugin has neither (older than minor
// 3, its minor not known, or it refused the stream). A plugin of minor 4 whose wire is not
// open gets it opened in the background (openWire), never by a call, which would then wait
// for a plugin that may be hung past its deadline: calls take the gRPC stream meanwhile.
func (c *Client) calls() (*callStream, error) {
	minor := c.minor.Load() - 1
	if minor < minorCalls || c.noCalls.Load() {
		return nil, nil
	}
	c.callsMu.Lock()
	defer c.callsMu.Unlock()
	if c.closed {
		return nil, errClientClosed
	}
	if c.cs != nil {
		return c.cs, nil
	}
	if minor >= minorWire && !c.noWire.Load() && !c.wireOpening {
		c.wireOpening = true
		go c.openWireNow(context.Background())
	}
	if c.gs != nil {
		return c.gs, nil
	}
	// The stream outlives every call: it ends when the plugin's connection closes (the
	// process exited or was killed) or a call finds it broken.
	ctx, cancel := context.WithCancel(context.Background())
	st, err := c.rpc.Calls(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	c.gs = newCallStream(&grpcCalls{st: st, cancel: cancel})
	go c.receive(c.gs)
	return c.gs, nil
}

// openCalls opens the wire now if the plugin has one and it is not open, so that the first
// calls take it (Launch calls it once the plugin is configured). That it did not open is
// logged, once, and is no error: the calls take the gRPC stream.
func (c *Client) openCalls(ctx context.Context) {
	if c.minor.Load()-1 < minorWire || c.noWire.Load() {
		return
	}
	c.callsMu.Lock()
	if c.closed || c.cs != nil || c.wireOpening {
		c.callsMu.Unlock()
		return
	}
	c.wireOpening = true
	c.callsMu.Unlock()
	c.openWireNow(ctx)
}

// openWireNow opens the wire (c.wireOpening is set) and makes it the calls' stream; if it
// does not open, the Client keeps the gRPC stream for the plugin's life, and says so once.
func (c *Client) openWireNow(ctx context.Context) {
	w, err := c.openWire(ctx)
	c.callsMu.Lock()
	defer c.callsMu.Unlock()
	c.wireOpening = false
	switch {
	case err != nil:
		c.noWire.Store(true)
		c.logger().Warn("plugin wire not opened; calls take the gRPC Calls stream", "error", err)
	case c.closed:
		w.close()
	default:
		c.cs = newCallStream(w)
	}
}

// closeCalls closes the Client's Calls stream or wire for good (the plugin is gone or being
// replaced): the calls in flight fail as unavailable and no goroutine is left behind.
func (c *Client) closeCalls() {
	c.callsMu.Lock()
	c.closed = true
	cs, gs := c.cs, c.gs
	c.callsMu.Unlock()
	if gs != nil {
		gs.conn.close() // its receive fails it
	}
	if cs != nil {
		cs.conn.close()
		if cs.readTok != nil { // a reading caller, if any, fails the stream; else this does
			select {
			case cs.readTok <- struct{}{}:
				c.failStream(cs, errClientClosed)
				<-cs.readTok
			default:
			}
		}
	}
}

// receive hands each response to its caller until the stream fails, then fails every call
// still waiting and forgets the stream (the next call opens another).
func (c *Client) receive(cs *callStream) {
	for {
		r, err := cs.conn.recv()
		if err != nil {
			c.failStream(cs, err)
			return
		}
		cs.deliver(r)
	}
}

// deliver hands r to its caller, returning the caller's channel (nil: it gave up).
func (cs *callStream) deliver(r *pb.CallResponse) chan *pb.CallResponse {
	cs.mu.Lock()
	ch := cs.pending[r.Id]
	delete(cs.pending, r.Id)
	cs.mu.Unlock()
	if ch != nil {
		ch <- r
	}
	return ch
}

// failStream ends cs, which failed with err (once; later calls do nothing): every call
// waiting fails, and the next call opens another stream or wire.
func (c *Client) failStream(cs *callStream, err error) {
	if errors.Is(err, io.EOF) {
		err = status.Error(codes.Unavailable, "plugin ended the calls stream")
	} else if _, ok := status.FromError(err); !ok { // the wire's
		err = status.Error(codes.Unavailable, "plugin wire: "+err.Error())
	}
	cs.mu.Lock()
	if cs.err != nil {
		cs.mu.Unlock()
		return
	}
	cs.err, cs.pending = err, nil
	cs.mu.Unlock()
	if status.Code(err) == codes.Unimplemented {
		c.noCalls.Store(true) // calls go unary from now on
	}
	c.callsMu.Lock()
	if c.cs == cs {
		c.cs = nil
	}
	if c.gs == cs {
		c.gs = nil
	}
	c.callsMu.Unlock()
	close(cs.done)
	cs.conn.close()
}

// read makes the calling caller, which holds cs.readTok, read the wire for the others until
// its own response (id, ch) comes, the wire fails, or ctx ends; it then lets go of readTok.
func (c *Client) read(ctx context.Context, cs *callStream, id uint64, ch chan *pb.CallResponse) (*pb.CallResponse, bool, error) {
	defer func() { <-cs.readTok }()
	select {
	case r := <-ch: // delivered by the reader before
		return r, true, nil
	default:
	}
	w := cs.conn.(*wireConn)
	if ctx.Done() != nil { // else it never ends
		stop := context.AfterFunc(ctx, w.interrupt)
		defer stop()
	}
	for {
		r, err := w.recv()
		if err == nil {
			if cs.deliver(r) == ch {
				return <-ch, true, nil
			}
			continue
		}
		if errors.Is(err, os.ErrDeadlineExceeded) { // interrupted: by ctx, or late for an earlier reader
			w.conn.SetReadDeadline(time.Time{})
			if ctx.Err() == nil {
				continue
			}
			if cs.forget(id) {
				go cs.sendCancel(id)
			}
			return nil, true, status.FromContextError(ctx.Err()).Err()
		}
		c.failStream(cs, err)
		select {
		case r := <-ch: // answered just before the wire failed
			return r, true, nil
		default:
		}
		return c.streamFailed(cs.err)
	}
}

// streamFor returns the Calls stream a call of size bytes of content (sizeOfMessage,
// sizeOfWebhook: proto.Size costs as much as a quarter of the marshalling) should take, or nil
// when it must be a unary RPC (no stream, or the call too big for it). Errors are gRPC status
// errors, as a unary call returns them, for fromStatus.
func (c *Client) streamFor(size int) (*callStream, error) {
	if size > maxStreamedCall {
		return nil, nil
	}
	return c.calls()
}

// call makes req on the stream cs and returns its response. ok is false when the plugin
// refused the stream, without seeing req: the call must be a unary RPC; err is then nil.
// Errors are gRPC status errors, as a unary call returns them, for fromStatus.
func (c *Client) call(ctx context.Context, cs *callStream, req *pb.CallRequest) (resp *pb.CallResponse, ok bool, err error) {
	dl, _ := ctx.Deadline()
	if !dl.IsZero() {
		left := time.Until(dl)
		if left <= 0 {
			return nil, true, status.FromContextError(context.DeadlineExceeded).Err()
		}
		req.TimeoutMicros = max(left.Microseconds(), 1)
	}
	ch := make(chan *pb.CallResponse, 1)
	cs.mu.Lock()
	if cs.err != nil {
		err := cs.err
		cs.mu.Unlock()
		return c.streamFailed(err)
	}
	cs.next++
	req.Id = cs.next
	cs.pending[req.Id] = ch
	cs.mu.Unlock()

	select {
	case cs.sendSem <- struct{}{}:
	case <-ctx.Done():
		cs.forget(req.Id)
		return nil, true, status.FromContextError(ctx.Err()).Err()
	case <-cs.done:
		return c.streamFailed(cs.err)
	}
	serr := cs.conn.send(req, dl)
	<-cs.sendSem
	if serr != nil {
		if ns, ok := serr.(notSent); ok {
			cs.forget(req.Id)
			return nil, true, ns.err
		}
		if cs.readTok != nil { // the wire closed itself; no reader may be there to see it
			c.failStream(cs, serr)
		}
		select { // the stream ended; receive reports why
		case <-cs.done:
			return c.streamFailed(cs.err)
		case <-ctx.Done():
			cs.forget(req.Id)
			return nil, true, status.FromContextError(ctx.Err()).Err()
		}
	}
	select {
	case r := <-ch:
		return r, true, nil
	case cs.readTok <- struct{}{}: // nobody reads the wire: this caller does
		return c.read(ctx, cs, req.Id, ch)
	case <-ctx.Done():
		if cs.forget(req.Id) {
			go cs.sendCancel(req.Id)
		}
		return nil, true, status.FromContextError(ctx.Err()).Err()
	case <-cs.done:
		select {
		case r := <-ch: // answered just before the stream failed
			return r, true, nil
		default:
		}
		return c.streamFailed(cs.err)
	}
}

// streamFailed is call's result when the stream failed with err: a plugin that refused the
// stream (Unimplemented) gets the call as a unary RPC, as it never saw it.
func (c *Client) streamFailed(err error) (*pb.CallResponse, bool, error) {
	if status.Code(err) == codes.Unimplemented {
		return nil, false, nil
	}
	return nil, true, err
}

// forget drops call id, reporting whether it was still waiting for its response.
func (cs *callStream) forget(id uint64) bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	_, ok := cs.pending[id]
	delete(cs.pending, id)
	return ok
}

// sendCancel tells the plugin the host gave up on call id, so its context is cancelled there
// as a unary call's would be.
func (cs *callStream) sendCancel(id uint64) {
	select {
	case cs.sendSem <- struct{}{}:
	case <-cs.done:
		return
	}
	cs.conn.send(&pb.CallRequest{Id: id, Cancel: true}, time.Now().Add(cancelWriteTimeout))
	<-cs.sendSem
}

// callResult returns the status error of a failed call's response, or an internal error if
// the response holds no result of the kind asked for.
func callResult(r *pb.CallResponse) error {
	e := r.GetError()
	if e == nil {
		return status.Error(codes.Internal, "plugin answered a call with no result of its kind")
	}
	st := status.New(codes.Code(e.Code), e.Message)
	if e.Detail != nil {
		if d, err := st.WithDetails(e.Detail); err == nil {
			st = d
		}
	}
	return st.Err()
}

// sizeOfMessage is the bytes of content m carries, give or take its fixed fields.
func sizeOfMessage(m adapter.Message) int {
	n := len(m.Text) + len(m.Markdown) + len(m.HTML) + len(m.Card) + len(m.Subject) + len(m.ReplyTo) +
		sizeOfTarget(m.To)
	for _, a := range m.Attachments {
		n += len(a.Data) + len(a.Name) + len(a.URL) + len(a.Title) + len(a.Description) + len(a.ID) + len(a.ContentType) + len(a.Type)
	}
	for _, mn := range m.Mentions {
		n += len(mn.ID) + len(mn.Name)
	}
	return n
}

func sizeOfTarget(t adapter.Target) int {
	n := len(t.User) + len(t.Party) + len(t.Tag) + len(t.Chat) + len(t.Email)
	for _, ss := range [][]string{t.Users, t.Emails} {
		for _, s := range ss {
			n += len(s) + 2
		}
	}
	if t.Channel != nil {
		n += len(t.Channel.Team) + len(t.Channel.Channel)
	}
	return n
}

// sizeOfWebhook is the bytes of content r carries, give or take its fixed fields.
func sizeOfWebhook(r *adapter.WebhookRequest) int {
	if r == nil {
		return 0
	}
	n := len(r.Body) + len(r.Method) + len(r.Path) + len(r.RemoteAddr)
	for _, vs := range []map[string][]string{r.Query, r.Header} {
		for k, v := range vs {
			n += len(k) + 4
			for _, s := range v {
				n += len(s) + 2
			}
		}
	}
	return n
}

// sendRPC makes a Send call, on the Calls stream when it can; size is sizeOfMessage.
func (c *Client) sendRPC(ctx context.Context, req *pb.SendRequest, size int) (*pb.SendResponse, error) {
	cs, err := c.streamFor(size)
	if err != nil {
		return nil, err
	}
	if cs != nil {
		r, ok, err := c.call(ctx, cs, &pb.CallRequest{Call: &pb.CallRequest_Send{Send: req}})
		if ok {
			if err != nil {
				return nil, err
			}
			if s := r.GetSend(); s != nil {
				return s, nil
			}
			return nil, callResult(r)
		}
	}
	return c.rpc.Send(ctx, req)
}

// webhookRPC makes a HandleWebhook call for bot, on the Calls stream when it can (with the
// query and header as pairs, which only a plugin with the stream reads).
func (c *Client) webhookRPC(ctx context.Context, bot string, req *adapter.WebhookRequest) (*pb.HandleWebhookResponse, error) {
	cs, err := c.streamFor(sizeOfWebhook(req))
	if err != nil {
		return nil, err
	}
	if cs != nil {
		wr := &pb.HandleWebhookRequest{Bot: bot, Request: webhookRequestToProto(req, true)}
		r, ok, err := c.call(ctx, cs, &pb.CallRequest{Call: &pb.CallRequest_Webhook{Webhook: wr}})
		if ok {
			if err != nil {
				return nil, err
			}
			if w := r.GetWebhook(); w != nil {
				return w, nil
			}
			return nil, callResult(r)
		}
	}
	return c.rpc.HandleWebhook(ctx, &pb.HandleWebhookRequest{Bot: bot, Request: webhookRequestToProto(req, false)})
}

// callServerConn is the plugin's side of a Calls stream or wire.
type callServerConn interface {
	// recv returns the next call; its error ends the stream.
	recv() (*pb.CallRequest, error)
	// send answers a call; safe for concurrent use. An error means the stream ended.
	send(*pb.CallResponse) error
}

// grpcCallServer is the Calls gRPC stream as a callServerConn.
type grpcCallServer struct {
	st pb.AdapterService_CallsServer
	mu sync.Mutex // gRPC allows one Send at a time
}

func (g *grpcCallServer) recv() (*pb.CallRequest, error) { return g.st.Recv() }

func (g *grpcCallServer) send(r *pb.CallResponse) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.st.Send(r)
}

// Calls implements the Calls RPC (serveCalls).
func (s *Server) Calls(st pb.AdapterService_CallsServer) error {
	err := s.serveCalls(st.Context(), &grpcCallServer{st: st})
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// serveCalls serves the calls of a Calls stream or wire until its recv fails, and returns
// that error: each call in a goroutine of its own (from a small pool, as gRPC's stream
// workers do for unary calls), its response sent as soon as it is ready. ctx is the
// stream's, whose end cancels the calls still running.
func (s *Server) serveCalls(ctx context.Context, conn callServerConn) error {
	var (
		mu       sync.Mutex // guards inflight
		inflight = make(map[uint64]context.CancelFunc)
		work     = make(chan func())
		workers  int
	)
	defer close(work)
	for {
		req, err := conn.recv()
		if err != nil {
			return err
		}
		if req.Cancel {
			mu.Lock()
			cancel := inflight[req.Id]
			mu.Unlock()
			if cancel != nil {
				cancel()
			}
			continue
		}
		var (
			cctx   context.Context
			cancel context.CancelFunc
		)
		if req.TimeoutMicros > 0 {
			cctx, cancel = context.WithTimeout(ctx, time.Duration(req.TimeoutMicros)*time.Microsecond)
		} else {
			cctx, cancel = context.WithCancel(ctx)
		}
		mu.Lock()
		inflight[req.Id] = cancel
		mu.Unlock()
		serve := func() {
			resp := s.serveCall(cctx, req)
			mu.Lock()
			delete(inflight, req.Id)
			mu.Unlock()
			cancel()
			conn.send(resp) // an error means the stream ended: its caller is gone too
		}
		select {
		case work <- serve: // an idle worker took it
		default:
			if workers < streamWorkers {
				workers++
				go func() {
					serve()
					for f := range work {
						f()
					}
				}()
			} else {
				go serve() // all workers busy: never queue a call behind a slow one
			}
		}
	}
}

// serveCall serves one call of the stream through the unary handlers, recovering a panic into
// an internal error for that call alone, as recoverUnary does.
func (s *Server) serveCall(ctx context.Context, req *pb.CallRequest) (resp *pb.CallResponse) {
	resp = &pb.CallResponse{Id: req.Id}
	method, inner := "", any(nil)
	defer func() {
		if r := recover(); r != nil {
			resp.Result = callError(s.panicked(method, inner, r))
		}
	}()
	switch c := req.Call.(type) {
	case *pb.CallRequest_Send:
		method, inner = pb.AdapterService_Send_FullMethodName, c.Send
		r, err := s.Send(ctx, c.Send)
		if err != nil {
			resp.Result = callError(err)
		} else {
			resp.Result = &pb.CallResponse_Send{Send: r}
		}
	case *pb.CallRequest_Webhook:
		method, inner = pb.AdapterService_HandleWebhook_FullMethodName, c.Webhook
		r, err := s.HandleWebhook(ctx, c.Webhook)
		if err != nil {
			resp.Result = callError(err)
		} else {
			resp.Result = &pb.CallResponse_Webhook{Webhook: r}
		}
	default: // a call kind of a newer host
		resp.Result = callError(status.Error(codes.Unimplemented, "plugin: unknown call on the calls stream; upgrade the plugin"))
	}
	return resp
}

// callError describes a handler's error (a status error, from toStatus) as a CallError.
func callError(err error) *pb.CallResponse_Error {
	st := status.Convert(err)
	e := &pb.CallError{Code: int32(st.Code()), Message: st.Message()}
	for _, d := range st.Details() {
		if p, ok := d.(*pb.Error); ok {
			e.Detail = p
			break
		}
	}
	return &pb.CallResponse_Error{Error: e}
}
