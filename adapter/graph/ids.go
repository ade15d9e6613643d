package graph

import (
	"fmt"
	"strings"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// maxIDLen bounds an id put into a URL or an OData literal. Object ids are 36 characters,
// UPNs at most 113 (64 + "@" + 48 for the domain part of a guest #EXT# name); Teams chat and
// channel ids are under 200.
const maxIDLen = 256

// validUserID checks a Graph user id (object id or user principal name) before it goes into
// a URL path (/users/{id}) or an OData literal (users('{id}')). Only letters, digits and
// . - _ @ # ! ^ ~ + are allowed: no quote (it would end the OData literal; address a user
// whose UPN has an apostrophe by object id), no slash, query or percent characters, no
// whitespace anywhere (a padded id never matches) and no control characters.
func validUserID(what, id string) error {
	if err := basicID(what, id); err != nil {
		return err
	}
	for _, r := range id {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case strings.ContainsRune(".-_@#!^~+", r):
		default:
			return idError(what, id, fmt.Sprintf("character %q is not allowed in a user id (object id or user principal name)", r))
		}
	}
	return nil
}

// validChatID checks a Teams chat, team, channel or message id: no whitespace, control
// characters, quotes, slashes, backslashes, parentheses, or ? # % (ids look like
// "19:abc@thread.v2", a GUID or epoch milliseconds).
func validChatID(what, id string) error {
	if err := basicID(what, id); err != nil {
		return err
	}
	if i := strings.IndexAny(id, "'\"/\\?#%()"); i >= 0 {
		return idError(what, id, fmt.Sprintf("character %q is not allowed", id[i]))
	}
	return nil
}

func basicID(what, id string) error {
	switch {
	case id == "":
		return idError(what, id, "empty")
	case len(id) > maxIDLen:
		return idError(what, id, fmt.Sprintf("longer than %d bytes", maxIDLen))
	}
	for _, r := range id {
		if r <= ' ' || r == 0x7f || r == 0x85 || r == 0xa0 || r == 0x2028 || r == 0x2029 {
			if strings.TrimSpace(id) != id {
				return idError(what, id, "surrounding whitespace or newline")
			}
			return idError(what, id, "whitespace or control character inside")
		}
	}
	return nil
}

func idError(what, id, why string) error {
	shown := id
	if len(shown) > 64 {
		shown = shown[:64] + "…"
	}
	return &adapter.Error{Kind: adapter.KindInvalidRequest, Platform: adapter.PlatformGraph, Code: "invalidId",
		Message: fmt.Sprintf("graph: %s id %q: %s", what, shown, why)}
}

// validateTarget checks every id of msg that goes into a URL or OData literal.
func validateTarget(msg adapter.Message) error {
	to := msg.To
	if to.User != "" {
		if err := validUserID("user", to.User); err != nil {
			return err
		}
	}
	if to.Chat != "" {
		if err := validChatID("chat", to.Chat); err != nil {
			return err
		}
	}
	if to.Channel != nil {
		if err := validChatID("team", to.Channel.Team); err != nil {
			return err
		}
		if err := validChatID("channel", to.Channel.Channel); err != nil {
			return err
		}
	}
	if msg.ReplyTo != "" && to.Channel != nil {
		if err := validChatID("reply-to message", msg.ReplyTo); err != nil {
			return err
		}
	}
	for _, m := range msg.Mentions {
		if err := validUserID("mentioned user", m.ID); err != nil {
			return err
		}
	}
	return nil
}
