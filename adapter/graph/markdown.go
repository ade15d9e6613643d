package graph

import (
	"bytes"
	"strings"

	"github.com/yuin/goldmark"
	"github.com/yuin/goldmark/extension"
	gmhtml "github.com/yuin/goldmark/renderer/html"
)

// markdown renders CommonMark (with GitHub's tables, strikethrough and autolinks) to the
// HTML Teams chats and Outlook show. goldmark's safe defaults hold: raw HTML in the Markdown
// is dropped (an HTML comment takes its place), and javascript:, vbscript:, file: and data:
// links are not made links, so nothing a sender did not mean as Markdown reaches the
// message as markup.
var markdown = goldmark.New(
	goldmark.WithExtensions(extension.Table, extension.Strikethrough, extension.Linkify),
	goldmark.WithRendererOptions(gmhtml.WithHardWraps()), // a line break in a chat is a line break
)

// markdownHTML returns md as HTML.
func markdownHTML(md string) (string, error) {
	var b bytes.Buffer
	if err := markdown.Convert([]byte(md), &b); err != nil {
		return "", err
	}
	return strings.TrimSpace(b.String()), nil
}
