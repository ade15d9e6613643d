package plugin

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	pb "github.com/seed-a64d9e1f/chatwire/plugin/proto"
)

// grpcCodes is the one table between adapter error kinds and gRPC codes. The kind itself
// travels in a status detail (pb.Error), so the code only matters to clients that do not read
// details; a status without a detail (a crashed plugin, a transport failure) is classified by
// its code through kindOfCode.
var grpcCodes = map[adapter.Kind]codes.Code{
	adapter.KindInvalidRequest:   codes.InvalidArgument,
	adapter.KindInvalidRecipient: codes.InvalidArgument,
	adapter.KindNotFound:         codes.NotFound,
	adapter.KindTooLarge:         codes.ResourceExhausted,
	adapter.KindUnauthorized:     codes.Unauthenticated,
	adapter.KindRateLimited:      codes.ResourceExhausted,
	adapter.KindUnavailable:      codes.Unavailable,
	adapter.KindTokenExpired:     codes.Unauthenticated,
	adapter.KindInternal:         codes.Internal,
}

// kindOfCode classifies a status that carries no pb.Error detail.
func kindOfCode(c codes.Code) adapter.Kind {
	switch c {
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
		return adapter.KindInvalidRequest
	case codes.NotFound:
		return adapter.KindNotFound
	case codes.Unauthenticated, codes.PermissionDenied:
		return adapter.KindUnauthorized
	case codes.ResourceExhausted:
		return adapter.KindTooLarge // gRPC's own message-size refusals
	case codes.Unavailable, codes.Aborted, codes.Canceled, codes.DeadlineExceeded:
		return adapter.KindUnavailable
	}
	return adapter.KindInternal
}

// errorToProto describes err as a pb.Error; nil for nil.
func errorToProto(err error) *pb.Error {
	if err == nil {
		return nil
	}
	p := &pb.Error{Kind: string(adapter.KindOf(err)), Code: adapter.Code(err), Message: err.Error()}
	var ae *adapter.Error
	if errors.As(err, &ae) {
		p.Platform = ae.Platform
		p.Message = ae.Message
		if p.Message == "" && ae.Err != nil {
			p.Message = ae.Err.Error()
		}
	}
	if d := adapter.RetryAfter(err); d > 0 {
		p.RetryAfter = durationpb.New(d)
	}
	return p
}

// errorFromProto rebuilds the *adapter.Error p describes; nil for nil.
func errorFromProto(p *pb.Error) error {
	if p == nil {
		return nil
	}
	e := &adapter.Error{Kind: adapter.ParseKind(p.Kind), Platform: p.Platform, Code: p.Code, Message: p.Message}
	if p.RetryAfter != nil {
		e.RetryAfter = p.RetryAfter.AsDuration()
	}
	return e
}

// toStatus converts an adapter error into the gRPC status error a server returns: the code
// from grpcCodes and the error itself as a pb.Error detail.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok && !isAdapterError(err) {
		return err // already a status (from a nested gRPC call)
	}
	p := errorToProto(err)
	code, ok := grpcCodes[adapter.Kind(p.Kind)]
	if !ok {
		code = codes.Internal
	}
	if errors.Is(err, context.Canceled) {
		code = codes.Canceled
	}
	st := status.New(code, err.Error())
	if withDetail, derr := st.WithDetails(p); derr == nil {
		st = withDetail
	}
	return st.Err()
}

func isAdapterError(err error) bool {
	var ae *adapter.Error
	return errors.As(err, &ae)
}

// fromStatus converts an error returned by a gRPC call back into an *adapter.Error: the one
// in the status detail if there is one, else one classified by the status code (a crashed or
// unreachable plugin gives KindUnavailable). Context errors of the caller's own ctx are
// returned as they are.
func fromStatus(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return &adapter.Error{Kind: adapter.KindUnavailable, Message: "plugin call: " + ctxErr.Error(), Err: ctxErr}
	}
	st, ok := status.FromError(err)
	if !ok {
		return &adapter.Error{Kind: adapter.KindUnavailable, Message: "plugin call failed", Err: err}
	}
	for _, d := range st.Details() {
		if p, ok := d.(*pb.Error); ok {
			return errorFromProto(p)
		}
	}
	return &adapter.Error{Kind: kindOfCode(st.Code()), Message: "plugin: " + st.Message()}
}
