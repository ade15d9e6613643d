#!/usr/bin/env python3
"""An echo bot for chatwire's adapter-host, in Python with the standard library only.

It reads the bot's events over Server-Sent Events (GET /v1/bots/{bot}/events), answers every
message with POST /v1/bots/{bot}/messages, and resumes with Last-Event-ID after a reconnect,
so it misses nothing while the host or the network hiccups. A WeCom AI Bot's messages are
answered as an LLM framework would: one streamed send (Content-Type application/x-ndjson,
chunked) replying to the event, the echo written word by word into one growing bubble.

    CHATWIRE_URL=http://127.0.0.1:8080 CHATWIRE_API_KEY=... python3 echo_bot.py hr

Environment:
    CHATWIRE_URL      the host's base URL (default http://127.0.0.1:8080)
    CHATWIRE_API_KEY  an API key from server.api_keys (none if the host has no keys)
    ECHO_MAX          stop after this many echoes (default: run forever)
    ECHO_SEND_BUDGET  seconds a send keeps retrying on 429/503 before the message is given
                      up (default 120)
"""

import json
import os
import sys
import time
import urllib.error
import urllib.request

BASE = os.environ.get("CHATWIRE_URL", "http://127.0.0.1:8080").rstrip("/")
KEY = os.environ.get("CHATWIRE_API_KEY", "")
MAX = int(os.environ.get("ECHO_MAX", "0"))


def request(method, path, body=None, headers=None, data=None):
    """Sends a request: body as JSON, or data as it is (an iterable of bytes is sent chunked)."""
    if body is not None:
        data = json.dumps(body).encode()
    req = urllib.request.Request(BASE + path, data=data, method=method)
    if KEY:
        req.add_header("Authorization", "Bearer " + KEY)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    return urllib.request.urlopen(req, timeout=None if method == "GET" else 120)


def events(bot, last_id):
    """Yields (id, kind, event) from the bot's SSE stream, starting after last_id."""
    headers = {"Accept": "text/event-stream"}
    if last_id:
        headers["Last-Event-ID"] = last_id
    with request("GET", "/v1/bots/%s/events" % bot, headers=headers) as resp:
        ev_id, kind, data = None, None, []
        for raw in resp:
            line = raw.decode("utf-8").rstrip("\r\n")
            if line == "":
                if data:
                    yield ev_id, kind, json.loads("\n".join(data))
                ev_id, kind, data = None, None, []
            elif line.startswith(":"):
                continue  # comment or keep-alive ping
            elif line.startswith("id: "):
                ev_id = line[4:]
            elif line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])


def reply_target(event):
    """Where to answer: the sender on WeCom, the chat (or mail sender) on Graph."""
    if event["platform"] == "wecom":
        return {"user": event["sender"]["id"]}
    if event["chat"]["type"] == "mail":
        return {"email": event["sender"]["id"]}
    return {"chat": event["chat"]["id"]}


# How long send keeps trying in all when the host answers 429 or 503, and the longest wait
# it honours between tries. A plugin restart can take 30 s or more (the host's backoff
# reaches 30 s, and a start may take as long again), so the budget outlasts a few.
SEND_BUDGET = float(os.environ.get("ECHO_SEND_BUDGET", "120"))
MAX_RETRY_AFTER = 30
MIN_RETRY_WAIT = 0.1  # even on Retry-After: 0, so a bot never hammers the host


class SendFailed(RuntimeError):
    """A send the host refused, or kept answering 429/503 to for all of SEND_BUDGET."""


def retry_after(e):
    """Seconds the answer e asks to wait (Retry-After in seconds), bounded; 1 if absent."""
    try:
        wait = int(e.headers.get("Retry-After", "1"))
    except ValueError:  # an HTTP date, or garbage: wait a little
        wait = 1
    return max(MIN_RETRY_WAIT, min(wait, MAX_RETRY_AFTER))


def words(header, text, pause=0.1):
    """The NDJSON body of a streamed send: the header line, then text word by word, one
    {"delta": ...} line each, as a model produces them."""
    yield (json.dumps(header) + "\n").encode()
    for i, word in enumerate(text.split(" ")):
        if i:
            word = " " + word
            time.sleep(pause)
        yield (json.dumps({"delta": word}) + "\n").encode()


def send(bot, to, text, stream_reply_to=None):
    """Sends text, or with stream_reply_to (an event id) streams it word by word as the reply
    to that event. On 429 (rate limited) or 503 (the host's plugin restarting, the platform
    unavailable) it waits Retry-After (at most MAX_RETRY_AFTER) and tries again, for up to
    SEND_BUDGET seconds in all. Raises SendFailed when it gives up."""
    deadline = time.monotonic() + SEND_BUDGET
    while True:
        try:
            path = "/v1/bots/%s/messages" % bot
            if stream_reply_to:
                resp = request("POST", path, headers={"Content-Type": "application/x-ndjson"},
                               data=words({"reply_to": stream_reply_to}, text))
            else:
                resp = request("POST", path, {"to": to, "text": text})
            with resp:
                return json.load(resp)
        except urllib.error.HTTPError as e:
            try:
                err = json.load(e).get("error", {})
            except ValueError:  # not the host's JSON (a proxy's page, say)
                err = {}
            left = deadline - time.monotonic()
            if e.code in (429, 503) and left > 0:
                wait = min(retry_after(e), left)
                print("send answered %d (%s); retrying in %gs" % (e.code, err.get("platform_code") or err.get("kind") or "no detail", wait),
                      file=sys.stderr, flush=True)
                time.sleep(wait)
                continue
            raise SendFailed("send failed: %s %s (%s)" % (e.code, err.get("message"), err.get("kind")))


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: echo_bot.py BOT_NAME")
    bot = sys.argv[1]
    last_id, echoed, backoff = None, 0, 1
    while True:
        try:
            for ev_id, kind, event in events(bot, last_id):
                backoff = 1
                if kind == "message" and not event["text"].startswith("echo: "):
                    try:
                        streamed = event["id"] if event["platform"] == "wecom_aibot" else None
                        receipt = send(bot, reply_target(event), "echo: " + event["text"], streamed)
                    except SendFailed as e:
                        # Give this message up and keep serving the others; the stream
                        # position stays, so a reconnect resumes after this event.
                        print("%s: %r -> not echoed: %s" % (event["sender"]["id"], event["text"], e), file=sys.stderr, flush=True)
                    else:
                        echoed += 1
                        print("%s: %r -> echoed (id %s)" % (event["sender"]["id"], event["text"], receipt["id"]), flush=True)
                last_id = ev_id  # acknowledge only what was handled (echoed or given up)
                if MAX and echoed >= MAX:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
            print("event stream lost (%s); reconnecting in %ds" % (e, backoff), file=sys.stderr)
            time.sleep(backoff)
            backoff = min(backoff * 2, 30)


if __name__ == "__main__":
    main()
