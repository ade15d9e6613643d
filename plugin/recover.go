package plugin

import (
	"context"
	"fmt"
	"runtime/debug"

	"google.golang.org/grpc"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// recoverUnary turns a panic in a unary handler (one bot's Send, HandleWebhook, ...) into an
// internal error for that call alone: the process, and every other bot in it, keeps serving.
func (s *Server) recoverUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if r := recover(); r != nil {
			resp, err = nil, s.panicked(info.FullMethod, req, r)
		}
	}()
	return handler(ctx, req)
}

// recoverStream is recoverUnary for streaming handlers (go-plugin's own services).
func (s *Server) recoverStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = s.panicked(info.FullMethod, nil, r)
		}
	}()
	return handler(srv, ss)
}

// panicked logs a recovered panic once, with its stack, counts it, and returns the status
// error the caller gets. The panic value stays in the plugin's log: it may hold message
// content, so the error does not quote it.
func (s *Server) panicked(method string, req any, r any) error {
	s.panics.WithLabelValues(method).Inc()
	args := []any{"method", method, "panic", fmt.Sprint(r), "stack", string(debug.Stack())}
	if b, ok := req.(interface{ GetBot() string }); ok {
		args = append(args, "bot", b.GetBot())
	}
	s.log.Error("panic in a plugin call; recovered, the call fails as internal", args...)
	return toStatus(&adapter.Error{Kind: adapter.KindInternal,
		Message: "plugin: internal error (a panic in " + method + "; the plugin's log has the stack)"})
}
