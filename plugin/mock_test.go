package plugin

import (
	"context"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// fakeAdapter is a function-field mock of adapter.Adapter (plus Uploader and Poller); a nil
// field gives a zero result.
type fakeAdapter struct {
	SendFn    func(ctx context.Context, msg adapter.Message) (adapter.Receipt, error)
	WebhookFn func(ctx context.Context, req *adapter.WebhookRequest) (*adapter.WebhookResponse, []adapter.Event, error)
	StatusFn  func(ctx context.Context) (adapter.Status, error)
	UploadFn  func(ctx context.Context, a adapter.Attachment) (adapter.Attachment, error)
	PollFn    func(ctx context.Context) ([]adapter.Event, error)
	CloseFn   func() error
}

var (
	_ adapter.Adapter  = (*fakeAdapter)(nil)
	_ adapter.Uploader = (*fakeAdapter)(nil)
	_ adapter.Poller   = (*fakeAdapter)(nil)
)

func (f *fakeAdapter) Send(ctx context.Context, msg adapter.Message) (adapter.Receipt, error) {
	if f.SendFn == nil {
		return adapter.Receipt{}, nil
	}
	return f.SendFn(ctx, msg)
}

func (f *fakeAdapter) HandleWebhook(ctx context.Context, req *adapter.WebhookRequest) (*adapter.WebhookResponse, []adapter.Event, error) {
	if f.WebhookFn == nil {
		return &adapter.WebhookResponse{}, nil, nil
	}
	return f.WebhookFn(ctx, req)
}

func (f *fakeAdapter) Status(ctx context.Context) (adapter.Status, error) {
	if f.StatusFn == nil {
		return adapter.Status{Healthy: true}, nil
	}
	return f.StatusFn(ctx)
}

func (f *fakeAdapter) Upload(ctx context.Context, a adapter.Attachment) (adapter.Attachment, error) {
	if f.UploadFn == nil {
		return a, nil
	}
	return f.UploadFn(ctx, a)
}

func (f *fakeAdapter) Poll(ctx context.Context) ([]adapter.Event, error) {
	if f.PollFn == nil {
		return nil, nil
	}
	return f.PollFn(ctx)
}

func (f *fakeAdapter) Close() error {
	if f.CloseFn == nil {
		return nil
	}
	return f.CloseFn()
}
