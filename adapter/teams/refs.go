package teams

import (
	"context"
	"sync"
	"time"
)

// A Reference is what a bot must keep to write to a conversation later (spec §3.3): where
// its connector is, which tenant it is in and what kind of conversation it is. References come
// only from validated inbound activities or from the connector's own answers, which is what
// makes their serviceUrl trustworthy (spec §6.4).
type Reference struct {
	ConversationID   string    `json:"conversation_id"`   // without a channel thread's ";messageid="
	ConversationType string    `json:"conversation_type"` // personal, groupChat, channel
	ServiceURL       string    `json:"service_url"`
	TenantID         string    `json:"tenant_id"`
	BotID            string    `json:"bot_id"`            // "28:<appId>"
	UserID           string    `json:"user_id,omitempty"` // personal chats: the user's "29:" id
	Updated          time.Time `json:"updated"`
}

// A UserRef is a user the bot has seen: enough to open a 1:1 chat with them proactively.
type UserRef struct {
	ID          string `json:"id"` // "29:…", pairwise per bot
	AADObjectID string `json:"aad_object_id,omitempty"`
	Name        string `json:"name,omitempty"`
	TenantID    string `json:"tenant_id"`
	ServiceURL  string `json:"service_url"`
	// Conversation is the personal conversation with the bot, "" if none is known.
	Conversation string `json:"conversation,omitempty"`
}

// A ReferenceStore keeps conversation references and users for proactive messages. Its
// methods must be safe for concurrent use. A missing entry is (zero, false, nil).
type ReferenceStore interface {
	PutConversation(ctx context.Context, ref Reference) error
	Conversation(ctx context.Context, id string) (Reference, bool, error)
	DeleteConversation(ctx context.Context, id string) error
	PutUser(ctx context.Context, u UserRef) error
	// User finds a user by "29:" id or Entra object id.
	User(ctx context.Context, id string) (UserRef, bool, error)
}

// MemoryReferences is a ReferenceStore in this process's memory. Its zero value is ready to
// use.
type MemoryReferences struct {
	mu    sync.Mutex // guards convs, users and aad
	convs map[string]Reference
	users map[string]UserRef // by "29:" id
	aad   map[string]string  // Entra object id → "29:" id
}

var _ ReferenceStore = (*MemoryReferences)(nil)

func (m *MemoryReferences) init() {
	if m.convs == nil {
		m.convs, m.users, m.aad = map[string]Reference{}, map[string]UserRef{}, map[string]string{}
	}
}

// PutConversation stores ref.
func (m *MemoryReferences) PutConversation(_ context.Context, ref Reference) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.init()
	m.convs[ref.ConversationID] = ref
	return nil
}

// Conversation returns the reference of conversation id.
func (m *MemoryReferences) Conversation(_ context.Context, id string) (Reference, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.init()
	r, ok := m.convs[id]
	return r, ok, nil
}

// DeleteConversation forgets conversation id.
func (m *MemoryReferences) DeleteConversation(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.init()
	delete(m.convs, id)
	return nil
}

// PutUser stores u.
func (m *MemoryReferences) PutUser(_ context.Context, u UserRef) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.init()
	m.users[u.ID] = u
	if u.AADObjectID != "" {
		m.aad[u.AADObjectID] = u.ID
	}
	return nil
}

// User finds a user by "29:" id or Entra object id.
func (m *MemoryReferences) User(_ context.Context, id string) (UserRef, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.init()
	if mri, ok := m.aad[id]; ok {
		id = mri
	}
	u, ok := m.users[id]
	return u, ok, nil
}
