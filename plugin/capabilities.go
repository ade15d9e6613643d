package plugin

import (
	"context"
	"slices"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// The optional capabilities a bot reports in Configure (see BotInfo.Capabilities).
const (
	CapUpload = "upload" // adapter.Uploader
	CapPoll   = "poll"   // adapter.Poller
	CapRecall = "recall" // adapter.Recaller
)

// One-method views of a supervisedBot, embedded by withCapabilities.
type (
	uploadCap struct{ b *supervisedBot }
	pollCap   struct{ b *supervisedBot }
	recallCap struct{ b *supervisedBot }
)

func (c uploadCap) Upload(ctx context.Context, a adapter.Attachment) (adapter.Attachment, error) {
	return c.b.upload(ctx, a)
}
func (c pollCap) Poll(ctx context.Context) ([]adapter.Event, error) { return c.b.poll(ctx) }
func (c recallCap) Recall(ctx context.Context, id string) error     { return c.b.recall(ctx, id) }

// withCapabilities returns b as an adapter whose method set holds exactly the optional
// interfaces caps names, so a type assertion across the plugin boundary answers as it would
// in process.
func withCapabilities(b *supervisedBot, caps []string) adapter.Adapter {
	up, po, re := slices.Contains(caps, CapUpload), slices.Contains(caps, CapPoll), slices.Contains(caps, CapRecall)
	u, p, r := uploadCap{b}, pollCap{b}, recallCap{b}
	switch {
	case up && po && re:
		return struct {
			*supervisedBot
			uploadCap
			pollCap
			recallCap
		}{b, u, p, r}
	case up && po:
		return struct {
			*supervisedBot
			uploadCap
			pollCap
		}{b, u, p}
	case up && re:
		return struct {
			*supervisedBot
			uploadCap
			recallCap
		}{b, u, r}
	case po && re:
		return struct {
			*supervisedBot
			pollCap
			recallCap
		}{b, p, r}
	case up:
		return struct {
			*supervisedBot
			uploadCap
		}{b, u}
	case po:
		return struct {
			*supervisedBot
			pollCap
		}{b, p}
	case re:
		return struct {
			*supervisedBot
			recallCap
		}{b, r}
	}
	return b
}
