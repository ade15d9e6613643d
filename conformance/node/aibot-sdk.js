// aibot-sdk.js drives the official @wecom/aibot-node-sdk (npm, used as published) for the Go
// conformance tests in ../aibot. argv[2] is the WSClient options as JSON ({botId, secret,
// wsUrl, heartbeatInterval, reconnectInterval, maxReconnectAttempts, maxAuthFailureAttempts}).
// It writes one JSON object per line on stdout for everything the client emits:
//
//   {"ev":"connected"|"authenticated"|"disconnected"|"reconnecting"|"error"|"message"|"event","t":MS,...}
//
// and reads one command per line on stdin, answering each with {"ev":"result","id":ID,"t":MS,"ok":BOOL,...}:
//
//   {"op":"replyStream","id":ID,"reqId":R,"streamId":S,"content":C,"finish":B,"msgItem":[...]?,"feedback":{...}?}
//   {"op":"sendMessage","id":ID,"chatid":C,"body":{...}}
//   {"op":"disconnect"}                                   (then the process exits)
'use strict';

let WSClient;
try {
  ({ WSClient } = require('@wecom/aibot-node-sdk'));
} catch (e) {
  process.stderr.write('@wecom/aibot-node-sdk is not installed: run `make deps` (or `cd conformance/node && npm ci`)\n');
  process.exit(3);
}

const out = (o) => process.stdout.write(JSON.stringify({ ...o, t: Date.now() }) + '\n');
const quiet = { debug() {}, info() {}, warn() {}, error() {} };
const opts = JSON.parse(process.argv[2]);
const client = new WSClient({ ...opts, logger: quiet });

client.on('connected', () => out({ ev: 'connected' }));
client.on('authenticated', () => out({ ev: 'authenticated' }));
client.on('disconnected', (reason) => out({ ev: 'disconnected', reason: String(reason) }));
client.on('reconnecting', (attempt) => out({ ev: 'reconnecting', attempt }));
client.on('error', (e) => out({ ev: 'error', message: String(e && e.message), code: e && e.code }));
client.on('message', (frame) => out({ ev: 'message', frame }));
client.on('event', (frame) => out({ ev: 'event', frame }));

const errText = (e) => (e instanceof Error ? e.message : JSON.stringify(e));
const run = async (c) => {
  switch (c.op) {
    case 'replyStream':
      return client.replyStream({ headers: { req_id: c.reqId } }, c.streamId, c.content, c.finish, c.msgItem, c.feedback);
    case 'sendMessage':
      return client.sendMessage(c.chatid, c.body);
    case 'disconnect':
      client.disconnect();
      process.exit(0);
  }
  throw new Error(`unknown op ${c.op}`);
};

let buf = '';
process.stdin.on('data', (chunk) => {
  buf += chunk;
  let i;
  while ((i = buf.indexOf('\n')) >= 0) {
    const line = buf.slice(0, i);
    buf = buf.slice(i + 1);
    if (!line.trim()) continue;
    const c = JSON.parse(line);
    run(c).then(
      (frame) => out({ ev: 'result', id: c.id, ok: true, frame }),
      (e) => out({ ev: 'result', id: c.id, ok: false, error: errText(e) }),
    );
  }
});
process.stdin.on('end', () => {
  client.disconnect();
  process.exit(0);
});

client.connect();
