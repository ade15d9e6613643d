// Drives the Teams SDK's own streamer (@microsoft/teams.apps HttpStream, as locked in
// package-lock.json) against chatwire's teamstest emulator, for conformance/teams.
//
//   node teams-stream.js   {config, serviceUrl, conversationId, activityId, scenario, chunks} on stdin;
//   prints one JSON line {"ok":true,"result":{id,text}} or {"ok":false,"error":<class>,"message"}.
//
// Scenarios:
//   stream     update("Thinking…"), emit every chunk, close(): the SDK's ordinary streaming.
//   refused    one chunk pushed in a conversation where Teams does not stream; reports the
//              SDK's error class (StreamNotAllowedError for Teams' 403).
//   cleared    emit, clearText(), emit, close(): the second text does not contain the first,
//              which Teams refuses; reports close()'s error.
//   timeout    emit, wait until the emulator's (short) stream time is over, emit, close(): the
//              SDK then finishes the message with a PUT update.
//
// The connector token comes from the emulator's Entra token endpoint (MSAL refuses http://).
'use strict';

// HttpStream is not in the package's index; the App builds it exactly like this in
// ActivitySender.createStream: new HttpStream(new Client(ref.serviceUrl, http), ref, logger).
const { HttpStream } = require('@microsoft/teams.apps/dist/http/http-stream');
require('@microsoft/teams.apps'); // the package itself must be installed
const { Client } = require('@microsoft/teams.api');
const { Client: HttpClient } = require('@microsoft/teams.common');

function readStdin() {
  return new Promise((resolve, reject) => {
    let data = '';
    process.stdin.setEncoding('utf8');
    process.stdin.on('data', (c) => (data += c));
    process.stdin.on('end', () => resolve(JSON.parse(data)));
    process.stdin.on('error', reject);
  });
}

async function token(cfg) {
  const body = new URLSearchParams({
    grant_type: 'client_credentials',
    client_id: cfg.appId,
    client_secret: cfg.password,
    scope: 'https://api.botframework.com/.default',
  });
  const res = await fetch(`${cfg.base}/${cfg.tenant}/oauth2/v2.0/token`, { method: 'POST', body });
  const j = await res.json();
  if (!res.ok) throw new Error(`token endpoint ${res.status}: ${j.error}`);
  return j.access_token;
}

// A logger on stderr (stdout carries the result).
function logger(name) {
  const line = (level) => (...args) =>
    process.stderr.write(`[${name}] ${level} ${args.map((a) => (a instanceof Error ? a.message : typeof a === 'string' ? a : JSON.stringify(a))).join(' ')}\n`);
  return {
    child: (n) => logger(`${name}/${n}`),
    error: line('error'),
    warn: line('warn'),
    info: line('info'),
    debug: line('debug'),
    trace: line('trace'),
    log: line('log'),
  };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// chunkSent resolves on the stream's next accepted chunk.
function chunkSent(stream) {
  return new Promise((resolve) => stream.events.once('chunk', resolve));
}

async function main() {
  const input = await readStdin();
  const tok = await token(input.config);
  const http = new HttpClient({ token: async () => tok });
  const api = new Client(input.serviceUrl, http);
  const ref = {
    serviceUrl: input.serviceUrl,
    channelId: 'msteams',
    bot: { id: `28:${input.config.appId}`, name: 'Bot' },
    conversation: { id: input.conversationId, conversationType: input.conversationType || 'personal' },
    activityId: input.activityId,
  };
  const stream = new HttpStream(api, ref, logger('stream'));
  let result;
  switch (input.scenario) {
    case 'stream': {
      stream.update('Thinking…');
      for (const c of input.chunks) stream.emit(c);
      result = await stream.close();
      break;
    }
    case 'refused': {
      const { TypingActivityInput } = require('@microsoft/teams.api');
      // pushStreamChunk is what emit's flush calls; called directly so its error is seen
      // (flush only logs it).
      await stream.pushStreamChunk(new TypingActivityInput().withText(input.chunks[0]));
      result = { id: stream.id };
      break;
    }
    case 'cleared': {
      const sent = chunkSent(stream);
      stream.emit(input.chunks[0]);
      await sent;
      stream.clearText();
      await sleep(1100); // keep Teams' 1 request per second so only the content rule is tested
      stream.emit(input.chunks[1]);
      result = await stream.close();
      break;
    }
    case 'timeout': {
      const sent = chunkSent(stream);
      stream.emit(input.chunks[0]);
      await sent;
      await sleep(input.waitMs);
      stream.emit(input.chunks[1]);
      while (stream._flushing || stream.queue.length) await sleep(20);
      result = await stream.close();
      break;
    }
    default:
      throw new Error(`unknown scenario ${input.scenario}`);
  }
  process.stdout.write(JSON.stringify({ ok: true, result: result && { id: result.id, text: result.text } }) + '\n');
}

main().catch((err) => {
  process.stdout.write(JSON.stringify({ ok: false, error: err && (err.name || err.constructor.name), message: String(err && err.message) }) + '\n');
  process.exit(0);
});
