// A real OpenID Provider for keydesk's tests: `oidc-provider` (the
// OpenID-certified Node implementation) with its own login form, a fixed set
// of accounts, and the client keydesk registers.
//
//   node provider.mjs '{"clients":[{"client_id":"keydesk","client_secret":"…",
//     "redirect_uris":["http://127.0.0.1:PORT/auth/callback"],
//     "post_logout_redirect_uris":["http://127.0.0.1:PORT/auth/signed-out"]}]}'
//
// It listens on an ephemeral loopback port and prints `ISSUER <url>` once
// ready. Every account's password is `secret`.
import crypto from 'node:crypto';
import http from 'node:http';

import Provider from 'oidc-provider';

const config = JSON.parse(process.argv[2] || '{}');

// The people of the tests. `sub` is the account id.
const ACCOUNTS = {
  ops: { email: 'ops@example.com', email_verified: true, name: 'Olive Ops', groups: [] },
  vera: { email: 'vera@example.com', email_verified: true, name: 'Vera Viewer', groups: ['auditors'] },
  platform: { email: 'pat@example.com', email_verified: true, name: 'Pat Platform', groups: ['platform'] },
  unverified: { email: 'unverified@example.com', email_verified: false, name: 'Una Verified', groups: ['platform'] },
  eve: { email: 'eve@elsewhere.org', email_verified: true, name: 'Eve Elsewhere', groups: ['platform'] },
  ada: { email: 'ada@example.com', email_verified: true, name: 'Ada Lovelace', groups: [] },
};
const PASSWORD = 'secret';

// oidc-provider's storage interface over a Map: the tests' provider lives as
// long as one test, so nothing needs to outlive the process.
const store = new Map();
class MapAdapter {
  constructor(model) { this.model = model; }
  key(id) { return `${this.model}:${id}`; }
  async upsert(id, payload, expiresIn) {
    const exp = expiresIn ? Date.now() + expiresIn * 1000 : undefined;
    store.set(this.key(id), { payload, exp });
    if (payload.grantId) {
      const g = `grant:${payload.grantId}`;
      store.set(g, [...(store.get(g) || []), this.key(id)]);
    }
    if (payload.uid) store.set(`uid:${this.model}:${payload.uid}`, id);
  }
  async find(id) {
    const e = store.get(this.key(id));
    if (!e || (e.exp && e.exp < Date.now())) return undefined;
    return e.payload;
  }
  async findByUid(uid) {
    const id = store.get(`uid:${this.model}:${uid}`);
    return id ? this.find(id) : undefined;
  }
  async findByUserCode() { return undefined; }
  async consume(id) {
    const e = store.get(this.key(id));
    if (e) e.payload.consumed = Math.floor(Date.now() / 1000);
  }
  async destroy(id) { store.delete(this.key(id)); }
  async revokeByGrantId(grantId) {
    for (const k of store.get(`grant:${grantId}`) || []) store.delete(k);
    store.delete(`grant:${grantId}`);
  }
}

const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const signing = { ...privateKey.export({ format: 'jwk' }), kid: 'test-rs256', alg: 'RS256', use: 'sig' };

const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const page = (title, body) => `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${escape(title)}</title></head><body><h1>${escape(title)}</h1>${body}</body></html>`;

const options = {
  adapter: MapAdapter,
  clients: config.clients || [],
  jwks: { keys: [signing] },
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  scopes: ['openid', 'email', 'profile', 'groups'],
  claims: { email: ['email', 'email_verified'], profile: ['name'], groups: ['groups'] },
  // As Google, Entra and Keycloak do: the claims asked for are in the ID
  // token. `"conform": true` keeps them out (oidc-provider's own default):
  // the client must ask the userinfo endpoint.
  conformIdTokenClaims: config.conform === true,
  pkce: { required: () => true, methods: ['S256'] },
  // A provider that takes the client secret only in the request body, when asked.
  ...(config.clientAuthMethods ? { clientAuthMethods: config.clientAuthMethods } : {}),
  features: {
    devInteractions: { enabled: false },
    rpInitiatedLogout: {
      enabled: true,
      async logoutSource(ctx, form) {
        ctx.body = page('Sign out of the provider?', `${form}<button id="op-sign-out" type="submit" form="op.logoutForm" value="yes" name="logout">Yes, sign me out</button>`);
      },
      async postLogoutSuccessSource(ctx) {
        ctx.body = page('Signed out of the provider', '<p id="op-signed-out">You are signed out.</p>');
      },
    },
  },
  ttl: {
    AccessToken: 600, AuthorizationCode: 60, IdToken: 600, Interaction: 600, Session: 3600, Grant: 3600,
  },
  async renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = page('Provider error', `<pre id="op-error">${escape(JSON.stringify(out))}</pre>`);
  },
  async findAccount(ctx, id) {
    const account = ACCOUNTS[id];
    if (!account) return undefined;
    return { accountId: id, async claims() { return { sub: id, ...account }; } };
  },
  // keydesk is a first-party client: no consent screen, every scope granted.
  async loadExistingGrant(ctx) {
    const clientId = ctx.oidc.client.clientId;
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(clientId);
    if (grantId) {
      const grant = await ctx.oidc.provider.Grant.find(grantId);
      if (grant) return grant;
    }
    const grant = new ctx.oidc.provider.Grant({ clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid email profile groups');
    await grant.save();
    return grant;
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
};
// The issuer needs the port: listen first, then build the provider.
let provider;
let callback;

const readForm = (req) => new Promise((resolve, reject) => {
  let body = '';
  req.on('data', (c) => { body += c; if (body.length > 1e5) req.destroy(); });
  req.on('end', () => resolve(new URLSearchParams(body)));
  req.on('error', reject);
});

// The provider's own login form: the browser tests type into it.
async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const form = (error) => page('Sign in to the test provider', `${error ? `<p id="op-login-error">${escape(error)}</p>` : ''}
<form method="post" action="/interaction/${escape(details.uid)}" autocomplete="off">
<label>Account <input id="op-login" name="login" autofocus></label>
<label>Password <input id="op-password" name="password" type="password"></label>
<button id="op-submit" type="submit">Sign in</button></form>`);
  if (req.method === 'GET') {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(form());
    return;
  }
  const body = await readForm(req);
  const login = body.get('login') || '';
  if (!ACCOUNTS[login] || body.get('password') !== PASSWORD) {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(form('Unknown account or wrong password.'));
    return;
  }
  await provider.interactionFinished(req, res, { login: { accountId: login } }, { mergeWithLastSubmission: false });
}

const server = http.createServer((req, res) => {
  if (req.url.startsWith('/interaction/')) {
    interaction(req, res).catch((e) => {
      res.writeHead(400, { 'content-type': 'text/plain' });
      res.end(String(e && e.message));
    });
    return;
  }
  callback(req, res);
});

server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  provider = new Provider(`http://127.0.0.1:${port}`, options);
  callback = provider.callback();
  process.stdout.write(`ISSUER http://127.0.0.1:${port}\n`);
});
process.on('SIGTERM', () => process.exit(0));
