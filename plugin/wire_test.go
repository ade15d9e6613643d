package plugin

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	pb "github.com/seed-a64d9e1f/chatwire/plugin/proto"
)

// wireServerForTest is a Server with bot "hr" (fake) configured, logging to logs.
func wireServerForTest(t *testing.T, fake adapter.Adapter, logs *syncBuffer) *Server {
	t.Helper()
	srv := NewServer(ServerOptions{Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Open: func(context.Context, StoreConfig, BotConfig) (adapter.Adapter, error) { return fake, nil }})
	if _, err := srv.Configure(t.Context(), &pb.ConfigureRequest{Bots: []*pb.BotConfig{{Name: "hr", Platform: "wecom", Config: []byte(`{}`)}}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

// writeFrame writes m's frame to w.
func writeFrame(t *testing.T, w io.Writer, m proto.Message) {
	t.Helper()
	b, err := appendFrame(nil, m)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
}

// noTokenIn fails the test if logs hold token in any usual encoding.
func noTokenIn(t *testing.T, logs string, token []byte) {
	t.Helper()
	for _, enc := range []string{string(token), hex.EncodeToString(token), base64.StdEncoding.EncodeToString(token),
		base64.RawStdEncoding.EncodeToString(token), base64.URLEncoding.EncodeToString(token), base64.RawURLEncoding.EncodeToString(token)} {
		if strings.Contains(logs, enc) {
			t.Errorf("the logs hold the wire token: %s", logs)
			return
		}
	}
}

// TestWireTokenRefused: the plugin's wire socket is in a new 0700 directory inside
// PLUGIN_UNIX_SOCKET_DIR; a connection with a wrong or short token is closed without an
// answer and no call it sends is served, and the plugin keeps waiting: the host's connection
// with the token still gets the wire, and then the socket and its directory are gone. The
// token is in no log line.
func TestWireTokenRefused(t *testing.T) {
	base := t.TempDir()
	t.Setenv("PLUGIN_UNIX_SOCKET_DIR", base)
	var sends atomic.Int32
	fake := &fakeAdapter{SendFn: func(_ context.Context, msg adapter.Message) (adapter.Receipt, error) {
		sends.Add(1)
		return adapter.Receipt{ID: msg.Text}, nil
	}}
	var logs syncBuffer
	srv := wireServerForTest(t, fake, &logs)
	if _, err := srv.OpenWire(t.Context(), &pb.OpenWireRequest{Token: []byte("short")}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("OpenWire with a 5-byte token = %v; want invalid argument", err)
	}
	token := bytes.Repeat([]byte{0xA7}, wireTokenSize)
	r, err := srv.OpenWire(t.Context(), &pb.OpenWireRequest{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(r.Address)
	if r.Network != "unix" || filepath.Dir(dir) != base {
		t.Errorf("wire at %s %s; want a unix socket in a directory of its own in %s", r.Network, r.Address, base)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("wire directory %s: %v, %v; want mode 0700", dir, fi.Mode(), err)
	}
	call := &pb.CallRequest{Id: 1, Call: &pb.CallRequest_Send{Send: &pb.SendRequest{Bot: "hr", Message: &pb.Message{Text: "x"}}}}
	wrong := bytes.Repeat([]byte{0xA7}, wireTokenSize)
	wrong[wireTokenSize-1] = 0xA8
	for _, bad := range [][]byte{wrong, []byte("abc")} {
		conn, err := net.Dial("unix", r.Address)
		if err != nil {
			t.Fatal(err)
		}
		conn.Write(bad)
		if len(bad) == wireTokenSize {
			b, _ := appendFrame(nil, call)
			conn.Write(b) // may fail: the plugin may have closed the connection already
		} else {
			conn.(*net.UnixConn).CloseWrite()
		}
		conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		// closed with the frame unread: the connection is reset rather than ended
		if n, err := io.ReadAll(conn); len(n) != 0 || err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("a connection with a wrong token read %q, %v; want the plugin to close it unanswered", n, err)
		}
		conn.Close()
	}
	conn, err := net.Dial("unix", r.Address)
	if err != nil {
		t.Fatalf("the host's connection after refused ones: %v", err)
	}
	defer conn.Close()
	conn.Write(token)
	var ack [1]byte
	if _, err := io.ReadFull(conn, ack[:]); err != nil || ack[0] != wireAccepted {
		t.Fatalf("answer to the token = %v, %v; want %d", ack, err, wireAccepted)
	}
	writeFrame(t, conn, call)
	b, err := newFrameReader(conn).next()
	var resp pb.CallResponse
	if err != nil || proto.Unmarshal(b, &resp) != nil || resp.Id != 1 || resp.GetSend().GetReceipt().GetId() != "x" {
		t.Fatalf("the call on the wire answered %v, %v; want id 1, receipt x", &resp, err)
	}
	if n, m := sends.Load(), srv.wireCalls.Load(); n != 1 || m != 1 {
		t.Errorf("%d sends, %d calls on the wire; want only the host's one", n, m)
	}
	for _, p := range []string{r.Address, dir} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there once the host connected: %v", p, err)
		}
	}
	if !strings.Contains(logs.String(), "refused a wire connection") {
		t.Errorf("no log line of the refused connections: %s", logs.String())
	}
	noTokenIn(t, logs.String(), token)
}

// TestWireAcceptTimeout: a wire the host never connects to is given up after
// wireAcceptTimeout: its goroutine ends, its socket and directory are removed.
func TestWireAcceptTimeout(t *testing.T) {
	t.Setenv("PLUGIN_UNIX_SOCKET_DIR", t.TempDir())
	defer func(d time.Duration) { wireAcceptTimeout = d }(wireAcceptTimeout)
	wireAcceptTimeout = 50 * time.Millisecond
	var logs syncBuffer
	srv := wireServerForTest(t, echo(), &logs)
	r, err := srv.OpenWire(t.Context(), &pb.OpenWireRequest{Token: make([]byte, wireTokenSize)})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "wire given up", func() bool { return srv.wires.Load() == 0 })
	if _, err := os.Lstat(filepath.Dir(r.Address)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("wire directory still there: %v", err)
	}
}

// TestWireFrameTooBig: a frame longer than maxWireFrame is a protocol error that closes the
// wire, on the plugin's side and on the host's.
func TestWireFrameTooBig(t *testing.T) {
	t.Setenv("PLUGIN_UNIX_SOCKET_DIR", t.TempDir())
	var logs syncBuffer
	srv := wireServerForTest(t, echo(), &logs)
	token := bytes.Repeat([]byte{1}, wireTokenSize)
	r, err := srv.OpenWire(t.Context(), &pb.OpenWireRequest{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("unix", r.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write(token)
	conn.Write(binary.BigEndian.AppendUint32(nil, maxWireFrame+1))
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	if b, err := io.ReadAll(conn); string(b) != string([]byte{wireAccepted}) || err != nil {
		t.Errorf("after a frame over the limit the plugin sent %q, %v; want its answer to the token, then the end", b, err)
	}
	if !strings.Contains(logs.String(), "over the limit") {
		t.Errorf("the plugin did not log the protocol error: %s", logs.String())
	}
	// the host's side
	fr := newFrameReader(bytes.NewReader(binary.BigEndian.AppendUint32(nil, maxWireFrame+1)))
	if _, err := fr.next(); !errors.Is(err, errWireProtocol) {
		t.Errorf("host reading a frame over the limit = %v; want a protocol error", err)
	}
	host, plugin := net.Pipe()
	c := &Client{}
	cs := newCallStream(newWireConn(host))
	go c.receive(cs)
	go plugin.Write(binary.BigEndian.AppendUint32(nil, maxWireFrame+1))
	<-cs.done
	if status.Code(cs.err) != codes.Unavailable || !strings.Contains(cs.err.Error(), "over the limit") {
		t.Errorf("the host's wire ended with %v; want unavailable, over the limit", cs.err)
	}
	if _, err := plugin.Write([]byte{0}); err == nil {
		t.Error("the host did not close the wire after a frame over the limit")
	}
}

// TestWireOldPluginGetsStream: a plugin of minor 3 is never asked for a wire: its calls take
// the Calls stream.
func TestWireOldPluginGetsStream(t *testing.T) {
	sv := serveCountingServer(t, map[string]adapter.Adapter{"hr": echo()}, countingServer{asMinor: 3})
	if _, err := sv.c.Info(t.Context()); err != nil {
		t.Fatal(err)
	}
	roundTrip(t, sv.c, "minor-3 plugin")
	roundTrip(t, sv.c, "minor-3 plugin, again")
	if w, n, u := sv.wires.Load(), sv.calls.Load(), sv.unary.Load(); w != 0 || n != 1 || u != 0 {
		t.Errorf("%d wires and %d Calls streams opened, %d unary calls; want 0, 1 and 0", w, n, u)
	}
}

// TestWireOpenFailsFallsBackToStream: when the wire does not open (OpenWire fails, its socket
// cannot be dialled, the plugin refuses the token) the host logs it once and makes its calls
// on the Calls stream, and asks for no wire again. The token is in no log line.
func TestWireOpenFailsFallsBackToStream(t *testing.T) {
	var token []byte
	cases := map[string]func(context.Context, *pb.OpenWireRequest) (*pb.OpenWireResponse, error){
		"error": func(context.Context, *pb.OpenWireRequest) (*pb.OpenWireResponse, error) {
			return nil, status.Error(codes.Internal, "no wire today")
		},
		"tcp": func(context.Context, *pb.OpenWireRequest) (*pb.OpenWireResponse, error) {
			return &pb.OpenWireResponse{Network: "tcp", Address: "127.0.0.1:1"}, nil
		},
		"no socket": func(context.Context, *pb.OpenWireRequest) (*pb.OpenWireResponse, error) {
			return &pb.OpenWireResponse{Network: "unix", Address: filepath.Join(t.TempDir(), "none.sock")}, nil
		},
		"token refused": func(_ context.Context, req *pb.OpenWireRequest) (*pb.OpenWireResponse, error) {
			token = req.Token
			path := filepath.Join(t.TempDir(), "s.sock")
			ln, err := net.Listen("unix", path)
			if err != nil {
				return nil, err
			}
			go func() {
				defer ln.Close()
				if conn, err := ln.Accept(); err == nil {
					io.ReadFull(conn, make([]byte, wireTokenSize))
					conn.Close()
				}
			}()
			return &pb.OpenWireResponse{Network: "unix", Address: path}, nil
		},
	}
	for name, open := range cases {
		t.Run(name, func(t *testing.T) {
			sv := serveCountingServer(t, map[string]adapter.Adapter{"hr": echo()}, countingServer{openWire: open})
			var logs syncBuffer
			sv.c.log = slog.New(slog.NewJSONHandler(&logs, nil))
			if _, err := sv.c.Info(t.Context()); err != nil {
				t.Fatal(err)
			}
			sv.c.openCalls(t.Context())
			roundTrip(t, sv.c, "wire not opened")
			roundTrip(t, sv.c, "wire not opened, again")
			if w, n, u := sv.wires.Load(), sv.calls.Load(), sv.unary.Load(); w != 1 || n != 1 || u != 0 {
				t.Errorf("%d wires and %d Calls streams opened, %d unary calls; want 1, 1 and 0", w, n, u)
			}
			if n := strings.Count(logs.String(), "plugin wire not opened"); n != 1 {
				t.Errorf("logged %d times that the wire did not open; want once: %s", n, logs.String())
			}
			if token != nil {
				noTokenIn(t, logs.String(), token)
			}
		})
	}
}

// TestWireBrokenFailsCallsThenReopens: when the wire breaks (here the plugin closes it), every
// call in flight on it fails as unavailable at once, and the next call opens a new wire.
func TestWireBrokenFailsCallsThenReopens(t *testing.T) {
	const n = 3
	var arrived sync.WaitGroup
	arrived.Add(n)
	fake := echo()
	fake.SendFn = func(ctx context.Context, msg adapter.Message) (adapter.Receipt, error) {
		if msg.Text == "block" {
			arrived.Done()
			<-ctx.Done()
			return adapter.Receipt{}, ctx.Err()
		}
		return adapter.Receipt{ID: msg.Text}, nil
	}
	sv := serveCountingServer(t, map[string]adapter.Adapter{"hr": fake}, countingServer{})
	if _, err := sv.c.Info(t.Context()); err != nil {
		t.Fatal(err)
	}
	c := sv.c
	c.openCalls(t.Context())
	errs := make(chan error, n)
	for range n {
		go func() { _, err := c.Bot("hr").Send(t.Context(), adapter.Message{Text: "block"}); errs <- err }()
	}
	arrived.Wait()
	srvOf(t, c).closeWires()
	for range n {
		select {
		case err := <-errs:
			if !errors.Is(err, adapter.ErrUnavailable) {
				t.Errorf("call in flight on a broken wire = %v; want unavailable", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("a call in flight on a broken wire still waits after 30s")
		}
	}
	roundTrip(t, c, "after the wire broke") // on the gRPC stream while the wire reopens
	eventually(t, 10*time.Second, "the wire reopened", func() bool {
		c.callsMu.Lock()
		defer c.callsMu.Unlock()
		return c.cs != nil
	})
	before := srvOf(t, c).wireCalls.Load()
	roundTrip(t, c, "after the wire reopened")
	if w, n := countersOf(t, c).wires.Load(), srvOf(t, c).wireCalls.Load()-before; w != 2 || n != 2 {
		t.Errorf("%d wires opened, %d calls on the last; want 2 and 2", w, n)
	}
}

// TestWireOpeningHoldsNoCall: the wire opens in the background, never in a call, so a plugin
// whose OpenWire hangs (a hung plugin) holds no call past its deadline: the calls take the
// gRPC stream meanwhile.
func TestWireOpeningHoldsNoCall(t *testing.T) {
	defer func(d time.Duration) { wireAcceptTimeout = d }(wireAcceptTimeout)
	wireAcceptTimeout = time.Hour // the host waits for OpenWire as long as the test runs
	release := make(chan struct{})
	open := func(ctx context.Context, _ *pb.OpenWireRequest) (*pb.OpenWireResponse, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil, status.Error(codes.Unavailable, "hung")
	}
	sv := serveCountingServer(t, map[string]adapter.Adapter{"hr": echo()}, countingServer{openWire: open})
	defer close(release) // before the cleanups that close the client
	if _, err := sv.c.Info(t.Context()); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { roundTrip(t, sv.c, "while the wire opens"); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("a call still waits 30s on for a wire that does not open")
	}
	if n, u := sv.calls.Load(), sv.unary.Load(); n != 1 || u != 0 {
		t.Errorf("%d Calls streams, %d unary calls; want the calls on one stream", n, u)
	}
}

// TestWireReaderGivesUpReading: on the wire, a caller waiting for its response reads the
// wire for everyone; when its ctx ends it stops reading and another waiting caller takes
// over, so that one still gets its response.
func TestWireReaderGivesUpReading(t *testing.T) {
	arrived, release := make(chan string, 2), make(chan struct{})
	fake := echo()
	fake.SendFn = func(ctx context.Context, msg adapter.Message) (adapter.Receipt, error) {
		if msg.Text != "a" && msg.Text != "b" {
			return adapter.Receipt{ID: msg.Text}, nil
		}
		arrived <- msg.Text
		select {
		case <-release:
			return adapter.Receipt{ID: msg.Text}, nil
		case <-ctx.Done():
			return adapter.Receipt{}, ctx.Err()
		}
	}
	c := setupHop(t, fake, hopWire)
	roundTrip(t, c, "first")
	cs := c.cs
	actx, cancelA := context.WithCancel(t.Context())
	errA := make(chan error, 1)
	go func() { _, err := c.Bot("hr").Send(actx, adapter.Message{Text: "a"}); errA <- err }()
	<-arrived
	eventually(t, 10*time.Second, "a reads the wire", func() bool { return len(cs.readTok) == 1 })
	type result struct {
		r   adapter.Receipt
		err error
	}
	resB := make(chan result, 1)
	go func() {
		r, err := c.Bot("hr").Send(t.Context(), adapter.Message{Text: "b"})
		resB <- result{r, err}
	}()
	<-arrived
	cancelA()
	select {
	case err := <-errA:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("a, cancelled while reading the wire = %v; want canceled", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a, cancelled while reading the wire, still waits 30s on")
	}
	close(release)
	select {
	case res := <-resB:
		if res.err != nil || res.r.ID != "b" {
			t.Errorf("b, after a stopped reading = %+v, %v; want b", res.r, res.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("b still waits 30s after a stopped reading the wire")
	}
}

// servedByClient finds the served plugin of a Client from setupHop.
var servedByClient sync.Map // *Client → served

func srvOf(t *testing.T, c *Client) *Server { return countersOf(t, c).srv }

func countersOf(t *testing.T, c *Client) served {
	t.Helper()
	sv, ok := servedByClient.Load(c)
	if !ok {
		t.Fatal("not a Client of serveCountingServer")
	}
	return sv.(served)
}

// TestWireWriteDeadline: a plugin that stops reading (its socket buffer full) holds no
// sender past its deadline: a call whose frame could not start fails with its deadline and
// leaves the wire whole; one whose frame was cut part way closes the wire, which fails the
// calls in flight as unavailable (the framing is torn).
func TestWireWriteDeadline(t *testing.T) {
	host, plugin := net.Pipe() // no buffer: a write waits for the reader
	defer plugin.Close()
	c := &Client{}
	cs := newCallStream(newWireConn(host)) // read by its callers
	send := func(ctx context.Context) <-chan error {
		errc := make(chan error, 1)
		go func() {
			_, _, err := c.call(ctx, cs, &pb.CallRequest{Call: &pb.CallRequest_Send{Send: &pb.SendRequest{Bot: "hr", Message: &pb.Message{Text: "x"}}}})
			errc <- err
		}()
		return errc
	}
	wait := func(errc <-chan error, what string) error {
		t.Helper()
		select {
		case err := <-errc:
			return err
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: the call still waits 30s on, past its deadline", what)
			return nil
		}
	}
	// a call the plugin reads and never answers
	fr := newFrameReader(plugin)
	first := send(t.Context())
	if _, err := fr.next(); err != nil {
		t.Fatal(err)
	}
	// the plugin reads no more: a call with a deadline gives up, the wire stays
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if err := wait(send(ctx), "unread"); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("a call the plugin never read = %v; want deadline exceeded", err)
	}
	select {
	case <-cs.done:
		t.Fatalf("the wire closed after a call that never started: %v", cs.err)
	default:
	}
	// the plugin reads 2 bytes of the next frame and stops: the frame is cut, the wire closes
	go io.ReadFull(plugin, make([]byte, 2))
	ctx, cancel = context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if err := wait(send(ctx), "cut"); err == nil {
		t.Error("a call whose frame was cut succeeded")
	}
	if err := wait(first, "in flight"); status.Code(err) != codes.Unavailable {
		t.Errorf("the call in flight when the wire was torn = %v; want unavailable", err)
	}
}

// TestProcessWire: a real plugin subprocess serves the host's calls on the wire; when it is
// killed (SIGKILL) with calls in flight they fail as unavailable at once, none waits.
func TestProcessWire(t *testing.T) {
	p, logs := launchForTest(t)
	bot := p.Bot("hr")
	if r, err := bot.Send(t.Context(), adapter.Message{Text: "ok", Attachments: []adapter.Attachment{{Data: []byte("ab")}}}); err != nil || r.ID != "2" {
		t.Fatalf("Send = %+v, %v", r, err)
	}
	c, err := p.Client()
	if err != nil {
		t.Fatal(err)
	}
	c.callsMu.Lock()
	cs := c.cs
	c.callsMu.Unlock()
	if cs == nil {
		t.Fatal("no calls stream after a Send")
	}
	if _, ok := cs.conn.(*wireConn); !ok {
		t.Fatalf("the Send took a %T; want the wire", cs.conn)
	}
	const n = 4
	errs := make(chan error, n)
	for range n {
		go func() { _, err := bot.Send(t.Context(), adapter.Message{Text: "block"}); errs <- err }()
	}
	eventually(t, 10*time.Second, "calls in flight", func() bool {
		cs.mu.Lock()
		defer cs.mu.Unlock()
		return len(cs.pending) == n
	})
	if err := syscall.Kill(p.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for range n {
		select {
		case err := <-errs:
			if !errors.Is(err, adapter.ErrUnavailable) {
				t.Errorf("call in flight when the plugin was killed = %v; want unavailable", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("a call in flight still waits 30s after the plugin was killed")
		}
	}
	if strings.Contains(logs.String(), "plugin wire not opened") {
		t.Errorf("the wire did not open: %s", logs.String())
	}
}

// TestWireSilentConnectionHoldsNoLonger: a connection that sends no token (a stray local
// client) is dropped after wireTokenWait, so the host's own connection behind it is accepted
// then. Before, the accept loop waited on it until the wire's whole accept timeout, which
// then ended the loop: the host never got the wire.
func TestWireSilentConnectionHoldsNoLonger(t *testing.T) {
	t.Setenv("PLUGIN_UNIX_SOCKET_DIR", t.TempDir())
	old := wireAcceptTimeout
	wireAcceptTimeout = 30 * time.Second
	t.Cleanup(func() { wireAcceptTimeout = old })
	srv := wireServerForTest(t, &fakeAdapter{}, &syncBuffer{})
	token := bytes.Repeat([]byte{0x5C}, wireTokenSize)
	r, err := srv.OpenWire(t.Context(), &pb.OpenWireRequest{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	silent, err := net.Dial("unix", r.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	conn, err := net.Dial("unix", r.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write(token)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second)) // a third of the accept timeout
	var ack [1]byte
	if _, err := io.ReadFull(conn, ack[:]); err != nil || ack[0] != wireAccepted {
		t.Fatalf("the host's connection behind a silent one: %v, %v; want accepted after about %v", ack, err, wireTokenWait)
	}
}
