// Package plugin runs chatwire adapters in a hashicorp/go-plugin subprocess over gRPC. The
// plugin side calls [Serve]; a host calls [Launch] and uses [Plugin.Bot] exactly like an
// in-process [adapter.Adapter]. Launch supervises the process: a crashed plugin is replaced
// and its bots are configured again.
package plugin

import (
	"context"

	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	pb "github.com/seed-a64d9e1f/chatwire/plugin/proto"
)

// ProtocolVersion is the plugin protocol version: bumped on incompatible changes to
// adapter.proto (which then moves to a new package version).
const ProtocolVersion = 1

// ProtocolMinor grows with additive changes to adapter.proto; a plugin reports it in Info.
// 1 added the Recall RPC; 2 added SendRequest.idempotency_key; 3 added the Calls stream, which
// the host uses for Send and HandleWebhook when the plugin has it, with WebhookRequest's
// query_pairs and header_pairs (see calls.go); 4 added OpenWire, the wire the host then
// uses instead of the Calls stream (see wire.go).
const ProtocolMinor = 4

// minorIdempotencyKey is the first ProtocolMinor whose plugins honour SendRequest.idempotency_key.
const minorIdempotencyKey = 2

// PluginName is the name the adapter service is dispensed under.
const PluginName = "adapter"

// MaxMessageSize is the gRPC message limit on both sides: the 4 MiB default breaks files.
const MaxMessageSize = 64 << 20

// Handshake is shared by host and plugin. The cookie only tells a person who runs the plugin
// by hand that it is not meant to be run that way; it is not a security measure.
var Handshake = goplugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "CHATWIRE_PLUGIN",
	MagicCookieValue: "6f1c0a3e8d2b47c59e0d4a7b1f3c8e25",
}

// PluginMap returns the plugins served under protocol version 1: the adapter service backed
// by srv (nil on the host side, which only dispenses).
func PluginMap(srv *Server) map[string]goplugin.Plugin {
	return map[string]goplugin.Plugin{PluginName: &grpcPlugin{srv: srv}}
}

// VersionedPlugins returns the plugin sets by protocol version, for both sides.
func VersionedPlugins(srv *Server) map[int]goplugin.PluginSet {
	return map[int]goplugin.PluginSet{ProtocolVersion: PluginMap(srv)}
}

// grpcPlugin is the go-plugin glue: GRPCServer registers srv, GRPCClient wraps the
// connection in a *Client.
type grpcPlugin struct {
	goplugin.NetRPCUnsupportedPlugin
	srv *Server
}

func (p *grpcPlugin) GRPCServer(_ *goplugin.GRPCBroker, s *grpc.Server) error {
	pb.RegisterAdapterServiceServer(s, p.srv)
	return nil
}

// GRPCClient is called by go-plugin with a ctx it cancels when the plugin process exits;
// the Client keeps its Done channel, for crash detection, and closes its wire then.
func (p *grpcPlugin) GRPCClient(ctx context.Context, _ *goplugin.GRPCBroker, cc *grpc.ClientConn) (any, error) {
	c := &Client{rpc: pb.NewAdapterServiceClient(cc), exited: ctx.Done()}
	context.AfterFunc(ctx, c.closeCalls)
	return c, nil
}
