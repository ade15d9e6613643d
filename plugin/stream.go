package plugin

import (
	"context"
	"errors"
	"io"
	"sync"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	pb "github.com/seed-a64d9e1f/chatwire/plugin/proto"
)

// Every bot of a plugin can stream: one whose platform cannot collects the text and sends it
// once (adapter.OpenStream), so the proxy has nothing to ask.
var (
	_ adapter.Streamer = (*Bot)(nil)
	_ adapter.Streamer = (*supervisedBot)(nil)
)

// OpenStream implements [adapter.Streamer] over the Stream RPC. The stream outlives ctx,
// which bounds only the opening.
func (b *Bot) OpenStream(ctx context.Context, msg adapter.Message) (adapter.Stream, error) {
	return b.openStream(ctx, msg, false)
}

// OpenMarkdownStream is OpenStream for a reply whose text is markdown: a platform that
// cannot stream sends the collected text as markdown.
func (b *Bot) OpenMarkdownStream(ctx context.Context, msg adapter.Message) (adapter.Stream, error) {
	return b.openStream(ctx, msg, true)
}

func (b *Bot) openStream(ctx context.Context, msg adapter.Message, markdown bool) (adapter.Stream, error) {
	if err := adapter.CheckStreamHeader(msg); err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	st, err := b.c.rpc.Stream(sctx)
	if err != nil {
		cancel()
		return nil, fromStatus(ctx, err)
	}
	if err := st.Send(&pb.StreamRequest{Bot: b.name, Message: messageToProto(msg), Markdown: markdown}); err != nil {
		cancel()
		return nil, b.streamErr(ctx, st, err)
	}
	return &clientStream{b: b, st: st, cancel: cancel}, nil
}

// streamErr returns the server's error after a failed Send (gRPC reports it on receive).
func (b *Bot) streamErr(ctx context.Context, st pb.AdapterService_StreamClient, err error) error {
	if errors.Is(err, io.EOF) {
		if _, rerr := st.CloseAndRecv(); rerr != nil {
			return fromStatus(ctx, rerr)
		}
	}
	return fromStatus(ctx, err)
}

// clientStream is the host's side of one Stream RPC.
type clientStream struct {
	b      *Bot
	st     pb.AdapterService_StreamClient
	cancel context.CancelFunc
	mu     sync.Mutex // serializes Send with Finish/Abort; protects closed
	closed bool
}

func (s *clientStream) Append(ctx context.Context, delta string) error {
	if delta == "" {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return &adapter.Error{Kind: adapter.KindInvalidRequest, Message: "stream is closed"}
	}
	if err := s.st.Send(&pb.StreamRequest{Delta: delta}); err != nil {
		s.closed = true
		return s.b.streamErr(ctx, s.st, err)
	}
	return nil
}

func (s *clientStream) Finish(ctx context.Context) (adapter.Receipt, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return adapter.Receipt{}, &adapter.Error{Kind: adapter.KindInvalidRequest, Message: "stream is closed"}
	}
	s.closed = true
	s.mu.Unlock()
	type result struct {
		r   *pb.StreamResponse
		err error
	}
	ch := make(chan result, 1)
	go func() {
		r, err := s.st.CloseAndRecv()
		ch <- result{r, err}
		s.cancel()
	}()
	select {
	case res := <-ch:
		if res.err != nil {
			return adapter.Receipt{}, fromStatus(ctx, res.err)
		}
		return receiptFromProto(res.r.Receipt), nil
	case <-ctx.Done():
		return adapter.Receipt{}, ctx.Err() // delivery goes on in the plugin
	}
}

func (s *clientStream) Abort(ctx context.Context, reason string) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	defer s.cancel()
	if err := s.st.Send(&pb.StreamRequest{Abort: true, Reason: reason}); err != nil {
		return nil // the server is gone or already failed: nothing left to abort
	}
	s.st.CloseAndRecv()
	return nil
}

func (b *supervisedBot) OpenStream(ctx context.Context, msg adapter.Message) (adapter.Stream, error) {
	c, err := b.p.current()
	if err != nil {
		return nil, err
	}
	return c.Bot(b.name).OpenStream(ctx, msg)
}

// OpenMarkdownStream is [Bot.OpenMarkdownStream] on the current plugin process.
func (b *supervisedBot) OpenMarkdownStream(ctx context.Context, msg adapter.Message) (adapter.Stream, error) {
	c, err := b.p.current()
	if err != nil {
		return nil, err
	}
	return c.Bot(b.name).OpenMarkdownStream(ctx, msg)
}

// Stream implements the Stream RPC: it opens the bot's stream (adapter.OpenStream, so a bot
// that cannot stream collects and sends once), appends each delta, and finishes at the end of
// the request stream. A client that goes away aborts the reply.
func (s *Server) Stream(srv pb.AdapterService_StreamServer) error {
	ctx := srv.Context()
	first, err := srv.Recv()
	if err != nil {
		return toStatus(&adapter.Error{Kind: adapter.KindInvalidRequest, Message: "stream without a header"})
	}
	a, err := s.bot(first.Bot)
	if err != nil {
		return err
	}
	st, err := adapter.OpenStream(ctx, a, messageFromProto(first.Message), first.Markdown)
	if err != nil {
		return toStatus(err)
	}
	if first.Delta != "" {
		if err := st.Append(ctx, first.Delta); err != nil {
			st.Abort(context.WithoutCancel(ctx), "append failed")
			return toStatus(err)
		}
	}
	for {
		req, err := srv.Recv()
		switch {
		case errors.Is(err, io.EOF):
			r, err := st.Finish(context.WithoutCancel(ctx))
			if err != nil {
				return toStatus(err)
			}
			return srv.SendAndClose(&pb.StreamResponse{Receipt: receiptToProto(r)})
		case err != nil:
			st.Abort(context.WithoutCancel(ctx), "client went away")
			return err
		case req.Abort:
			st.Abort(context.WithoutCancel(ctx), req.Reason)
			return srv.SendAndClose(&pb.StreamResponse{})
		}
		if err := st.Append(ctx, req.Delta); err != nil {
			st.Abort(context.WithoutCancel(ctx), "append failed")
			return toStatus(err)
		}
	}
}
