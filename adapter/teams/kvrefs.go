package teams

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// A KV is a small key-value store that [KVReferences] keeps references in: a Redis database
// shared by a fleet, or a host's state file. Get of a missing key is (nil, false, nil). Its
// methods must be safe for concurrent use.
type KV interface {
	Get(ctx context.Context, key string) ([]byte, bool, error)
	Set(ctx context.Context, key string, value []byte) error
	Delete(ctx context.Context, key string) error
}

// KVReferences is a [ReferenceStore] on a [KV], so that every host of a fleet (or a host
// after a restart) can write proactively to the conversations and users any of them learnt.
// Keys are Prefix+"conv/"+conversation id, Prefix+"user/"+"29:" id and Prefix+"aad/"+Entra
// object id (which holds the "29:" id). A reference already stored with the same content is
// not written again unless it is older than an hour, so a busy conversation costs reads,
// not writes.
type KVReferences struct {
	KV     KV
	Prefix string
}

var _ ReferenceStore = (*KVReferences)(nil)

// refreshAfter is the age after which an unchanged reference is written again (its Updated).
const refreshAfter = time.Hour

func (s *KVReferences) get(ctx context.Context, key string, v any) (bool, error) {
	b, ok, err := s.KV.Get(ctx, s.Prefix+key)
	if err != nil || !ok {
		return false, err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("teams: reference %s is not valid JSON: %w", key, err)
	}
	return true, nil
}

func (s *KVReferences) set(ctx context.Context, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.KV.Set(ctx, s.Prefix+key, b)
}

// PutConversation stores ref unless the same reference was stored less than an hour ago.
func (s *KVReferences) PutConversation(ctx context.Context, ref Reference) error {
	var old Reference
	if ok, err := s.get(ctx, "conv/"+ref.ConversationID, &old); err == nil && ok {
		updated := old.Updated
		old.Updated = ref.Updated
		if old == ref && ref.Updated.Sub(updated) < refreshAfter {
			return nil
		}
	}
	return s.set(ctx, "conv/"+ref.ConversationID, ref)
}

// Conversation returns the reference of conversation id.
func (s *KVReferences) Conversation(ctx context.Context, id string) (Reference, bool, error) {
	var r Reference
	ok, err := s.get(ctx, "conv/"+id, &r)
	return r, ok, err
}

// DeleteConversation forgets conversation id.
func (s *KVReferences) DeleteConversation(ctx context.Context, id string) error {
	return s.KV.Delete(ctx, s.Prefix+"conv/"+id)
}

// PutUser stores u (and its Entra object id's link to it) unless it is stored already.
func (s *KVReferences) PutUser(ctx context.Context, u UserRef) error {
	var old UserRef
	if ok, err := s.get(ctx, "user/"+u.ID, &old); err != nil || !ok || old != u {
		if err := s.set(ctx, "user/"+u.ID, u); err != nil {
			return err
		}
	}
	if u.AADObjectID == "" {
		return nil
	}
	var linked string
	if ok, err := s.get(ctx, "aad/"+u.AADObjectID, &linked); err == nil && ok && linked == u.ID {
		return nil
	}
	return s.set(ctx, "aad/"+u.AADObjectID, u.ID)
}

// User finds a user by "29:" id or Entra object id.
func (s *KVReferences) User(ctx context.Context, id string) (UserRef, bool, error) {
	var mri string
	ok, err := s.get(ctx, "aad/"+id, &mri)
	if err != nil {
		return UserRef{}, false, err
	}
	if ok {
		id = mri
	}
	var u UserRef
	ok, err = s.get(ctx, "user/"+id, &u)
	return u, ok, err
}
