// Drives Microsoft's own Bot Framework clients (botbuilder / botframework-connector, as locked in
// package-lock.json) against chatwire's teamstest emulator, for conformance/teams.
//
//   node teams-botbuilder.js serve      config JSON on stdin; prints {"port":N} once listening.
//     A CloudAdapter bot on 127.0.0.1 with ConfigurationBotFrameworkAuthentication's
//     parameterized form pointed at the emulator's OpenID metadata: it validates every
//     activity exactly as botbuilder does and answers messages with "echo: <text>" through
//     its own ConnectorClient, and Action.Execute invokes with a message response naming the
//     verb and data botbuilder parsed. Each processed request is logged to stderr as one JSON line.
//   node teams-botbuilder.js connector  {config, ops:[…]} on stdin; prints one result per op.
//     Runs ConnectorClient calls (send, reply, update, delete, create) against the emulator.
//
// MSAL refuses http:// authorities (spec §6.8), so the bot's connector token comes from the
// emulator's token endpoint through a plain client-credentials POST, wrapped as the
// ServiceClientCredentials botbuilder's ConnectorClient signs requests with.
'use strict';

const http = require('http');
const { ActivityHandler, CloudAdapter } = require('botbuilder');
const {
  BotFrameworkAuthenticationFactory,
  AuthenticationConfiguration,
  ConnectorClient,
} = require('botframework-connector');

function readStdin() {
  return new Promise((resolve, reject) => {
    let data = '';
    process.stdin.setEncoding('utf8');
    process.stdin.on('data', (c) => (data += c));
    process.stdin.on('end', () => resolve(JSON.parse(data)));
    process.stdin.on('error', reject);
  });
}

// credentials fetches a connector token from the emulator's Entra token endpoint.
function credentials(cfg) {
  let token = null;
  let expires = 0;
  async function get() {
    if (token && Date.now() < expires - 60000) return token;
    const body = new URLSearchParams({
      grant_type: 'client_credentials',
      client_id: cfg.appId,
      client_secret: cfg.password,
      scope: 'https://api.botframework.com/.default',
    });
    const res = await fetch(`${cfg.base}/${cfg.tenant}/oauth2/v2.0/token`, { method: 'POST', body });
    const j = await res.json();
    if (!res.ok) throw new Error(`token endpoint ${res.status}: ${j.error}`);
    token = j.access_token;
    expires = Date.now() + j.expires_in * 1000;
    return token;
  }
  return {
    async signRequest(webResource) {
      webResource.headers.set('Authorization', 'Bearer ' + (await get()));
      return webResource;
    },
  };
}

function credentialFactory(cfg) {
  return {
    async isValidAppId(appId) {
      return appId === cfg.appId;
    },
    async isAuthenticationDisabled() {
      return false;
    },
    async createCredentials() {
      return credentials(cfg);
    },
  };
}

async function serve() {
  const cfg = await readStdin();
  const auth = BotFrameworkAuthenticationFactory.create(
    '', // channel service: public cloud, but every endpoint is given below (parameterized mode)
    true,
    `${cfg.base}/${cfg.tenant}`, // ToChannelFromBotLoginUrl
    'https://api.botframework.com', // ToChannelFromBotOAuthScope
    'https://api.botframework.com', // ToBotFromChannelTokenIssuer
    cfg.base, // OAuthUrl (unused)
    `${cfg.base}/v1/.well-known/openidconfiguration`, // ToBotFromChannelOpenIdMetadataUrl
    `${cfg.base}/v1/.well-known/openidconfiguration`, // ToBotFromEmulatorOpenIdMetadataUrl
    'urn:botframework:azure',
    credentialFactory(cfg),
    new AuthenticationConfiguration(),
  );
  const adapter = new CloudAdapter(auth);
  // The bot: echoes messages in their thread and answers Action.Execute with a message
  // response naming the verb and data it parsed (botbuilder's getAdaptiveCardInvokeValue).
  const bot = new ActivityHandler();
  bot.onMessage(async (context, next) => {
    await context.sendActivity(`echo: ${context.activity.text}`);
    await next();
  });
  bot.onAdaptiveCardInvoke = async (context, invokeValue) => ({
    statusCode: 200,
    type: 'application/vnd.microsoft.activity.message',
    value: `${invokeValue.action.verb} ${JSON.stringify(invokeValue.action.data)}`,
  });
  adapter.onTurnError = async (context, error) => {
    process.stderr.write(JSON.stringify({ turnError: String(error) }) + '\n');
    throw error;
  };
  const server = http.createServer((req, res) => {
    let data = '';
    req.on('data', (c) => (data += c));
    req.on('end', async () => {
      try {
        req.body = JSON.parse(data);
      } catch {
        req.body = undefined;
      }
      let status = 0;
      const r = {
        status(s) {
          status = s;
          res.statusCode = s;
          return r;
        },
        header(k, v) {
          res.setHeader(k, v);
          return r;
        },
        send(b) {
          res.write(typeof b === 'string' ? b : JSON.stringify(b));
          return r;
        },
        end() {
          res.end();
          return r;
        },
      };
      const orig = console.error;
      let error = '';
      console.error = (e) => (error = String((e && e.message) || e));
      try {
        await adapter.process(req, r, (context) => bot.run(context));
      } finally {
        console.error = orig;
      }
      process.stderr.write(JSON.stringify({ id: req.body && req.body.id, status, error }) + '\n');
    });
  });
  server.listen(0, '127.0.0.1', () => {
    process.stdout.write(JSON.stringify({ port: server.address().port }) + '\n');
  });
}

async function connector() {
  const { config, ops } = await readStdin();
  const out = [];
  for (const op of ops) {
    const client = new ConnectorClient(credentials(config), { baseUri: op.serviceUrl });
    const activity = { type: 'message', text: op.text, from: { id: '28:' + config.appId } };
    try {
      let r;
      switch (op.op) {
        case 'send':
          r = await client.conversations.sendToConversation(op.conv, activity);
          break;
        case 'reply':
          r = await client.conversations.replyToActivity(op.conv, op.id, { ...activity, replyToId: op.id });
          break;
        case 'update':
          r = await client.conversations.updateActivity(op.conv, op.id, { ...activity, id: op.id });
          break;
        case 'delete':
          r = await client.conversations.deleteActivity(op.conv, op.id);
          break;
        case 'create':
          r = await client.conversations.createConversation({
            isGroup: false,
            bot: { id: '28:' + config.appId },
            members: [{ id: op.member }],
            tenantId: config.tenant,
            channelData: { tenant: { id: config.tenant } },
          });
          break;
        default:
          throw new Error('unknown op ' + op.op);
      }
      out.push({ id: (r && r.id) || '', status: (r && r._response && r._response.status) || 0 });
    } catch (e) {
      let code = e.code || '';
      const body = (e.response && e.response.bodyAsText) || '';
      try {
        const j = JSON.parse(body);
        if (j.error && j.error.code) code = j.error.code;
      } catch {}
      out.push({ error: String(e.message || e), status: e.statusCode || 0, code });
    }
  }
  process.stdout.write(JSON.stringify(out));
}

const mode = process.argv[2];
(mode === 'serve' ? serve() : mode === 'connector' ? connector() : Promise.reject(new Error('usage: serve | connector'))).catch((e) => {
  process.stderr.write(String((e && e.stack) || e) + '\n');
  process.exit(1);
});
