#!/usr/bin/env node
// A Keycloak-shaped OAuth2 token endpoint for rotator's conformance tests,
// backed by the real (OpenID Certified) `oidc-provider` package.
//
//   node server.mjs --port 0 [--config JSON] [--verbose] [--watch-stdin]
//
// Configuration comes from the JSON env var OIDC_PEER_CONFIG, then --config
// (a JSON string, merged over the env var). Keys, all optional:
//   realm           "astore-p2p"   issuer = http://127.0.0.1:PORT/auth/realms/{realm}
//   ttl             3              seconds of life of client_credentials access tokens
//   clients         [{client_id, client_secret?, token_endpoint_auth_method?, scope?,
//                     jwks?, token_endpoint_auth_signing_alg?}]
//                   methods: client_secret_basic (default), client_secret_post,
//                   client_secret_jwt, private_key_jwt (needs jwks, no secret)
//   scopes          ["profile", "email"]  scopes the server knows of
//   format          "opaque" | "jwt"      access token format
//   refresh         false          Keycloak's "use refresh tokens for client credentials"
//   refresh_ttl     1800           refresh_expires_in, seconds
//   refresh_rotate  false          a used refresh token is spent (reuse -> invalid_grant)
//   bad_client_error "invalid_client"  error code for failed client authentication
//                                  (newer Keycloak says "unauthorized_client")
//
// Once listening, ONE JSON line goes to stdout:
//   {"port": N, "issuer": "...", "token_url": "...", "introspection_url": "...", "admin_url": "..."}
// Nothing else is ever written to stdout; diagnostics go to stderr, without secrets.
//
// Test-only admin routes (the server binds 127.0.0.1 only):
//   POST /__admin/fail            {"status":503,"times":2,"body"?,"content_type"?,"retry_after"?,"delay_ms"?}
//   POST /__admin/revoke-refresh  invalidate every refresh token issued so far
//   POST /__admin/active          {"token": "..."} -> {"active": bool}, works for opaque and JWT
//   POST /__admin/reset           clear stats and pending failures (tokens stay valid)
//   GET  /__admin/stats           counts of token requests by grant_type and outcome, every
//                                 client_assertion received (RFC 7523 clients), and each
//                                 request's extra form fields (audience, resource...)

import { generateKeyPairSync, randomBytes, verify as cryptoVerify } from 'node:crypto';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';

// stdout carries the one ready line and nothing else: oidc-provider prints its
// notices with console.info (stdout) and console.warn (stderr).
const writeErr = (...args) => process.stderr.write(`${args.map(String).join(' ')}\n`);
const KNOWN_NOISE = [
  /^oidc-provider WARNING: Unsupported runtime/,
  /^oidc-provider WARNING: a quick start development-only in-memory adapter is used/,
  /^oidc-provider NOTICE: default .* function called, you SHOULD change it/,
];
let verbose = false;
const filtered = (...args) => {
  const text = args.map(String).join(' ');
  if (!verbose && KNOWN_NOISE.some((re) => re.test(text))) return;
  writeErr(text);
};
console.log = filtered;
console.info = filtered;
console.warn = filtered;
console.debug = filtered;

function fatal(message) {
  writeErr(`oidc-peer: ${message}`);
  process.exit(2);
}

const { values: argv } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    config: { type: 'string' },
    verbose: { type: 'boolean', default: false },
    'watch-stdin': { type: 'boolean', default: false },
  },
  strict: true,
});
verbose = argv.verbose;

function parseJson(text, where) {
  try {
    const value = JSON.parse(text);
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      throw new Error('not a JSON object');
    }
    return value;
  } catch (err) {
    return fatal(`${where}: ${err.message}`);
  }
}

const DEFAULTS = {
  realm: 'astore-p2p',
  ttl: 3,
  clients: [{ client_id: 'oms-client', client_secret: 'oms-client-secret' }],
  scopes: ['profile', 'email'],
  format: 'opaque',
  refresh: false,
  refresh_ttl: 1800,
  refresh_rotate: false,
  bad_client_error: 'invalid_client',
};
const cfg = {
  ...DEFAULTS,
  ...(process.env.OIDC_PEER_CONFIG ? parseJson(process.env.OIDC_PEER_CONFIG, 'OIDC_PEER_CONFIG') : {}),
  ...(argv.config ? parseJson(argv.config, '--config') : {}),
};

const port = Number(argv.port);
if (!Number.isInteger(port) || port < 0 || port > 65535) fatal(`bad --port ${argv.port}`);
if (!/^[A-Za-z0-9._-]+$/.test(cfg.realm)) fatal('realm must match [A-Za-z0-9._-]+');
if (!(Number.isInteger(cfg.ttl) && cfg.ttl > 0)) fatal('ttl must be a positive integer (seconds)');
if (!(Number.isInteger(cfg.refresh_ttl) && cfg.refresh_ttl > 0)) fatal('refresh_ttl must be a positive integer');
if (!['opaque', 'jwt'].includes(cfg.format)) fatal('format must be "opaque" or "jwt"');
if (!Array.isArray(cfg.clients) || cfg.clients.length === 0) fatal('clients must be a non-empty list');
if (!Array.isArray(cfg.scopes) || cfg.scopes.includes('offline_access')) {
  // offline_access would make oidc-provider register its own refresh_token grant.
  fatal('scopes must be a list without offline_access');
}
const AUTH_METHODS = ['client_secret_basic', 'client_secret_post', 'client_secret_jwt', 'private_key_jwt'];
for (const c of cfg.clients) {
  if (typeof c?.client_id !== 'string' || !c.client_id) fatal('each client needs a client_id');
  if (c.token_endpoint_auth_method === 'private_key_jwt') {
    if (!Array.isArray(c.jwks?.keys)) fatal(`client ${c.client_id}: private_key_jwt needs jwks`);
  } else if (typeof c.client_secret !== 'string' || !c.client_secret) fatal(`client ${c.client_id} needs a client_secret`);
  if (c.token_endpoint_auth_method && !AUTH_METHODS.includes(c.token_endpoint_auth_method)) {
    fatal(`client ${c.client_id}: token_endpoint_auth_method must be one of ${AUTH_METHODS.join(', ')}`);
  }
}

// The Keycloak layout: issuer http://HOST/auth/realms/{realm}, endpoints under
// /protocol/openid-connect. oidc-provider sees paths relative to the issuer
// (we strip the prefix ourselves, the way express/koa-mount would).
const REALM_PREFIX = `/auth/realms/${cfg.realm}`;
const OIDC = '/protocol/openid-connect';
const TOKEN_PATH = `${OIDC}/token`;
const INTROSPECT_PATH = `${OIDC}/token/introspect`;
const RESOURCE = 'urn:rotator:oidc-peer:api';

// --- state shared by the middleware and the admin routes -----------------------------
const faults = []; // queue of {status, body, content_type, retry_after, delay_ms}
const refreshTokens = new Map(); // value -> {clientId, scope, exp, spent}
let stats = freshStats();

function freshStats() {
  return {
    token_requests: 0,
    by_grant: {}, // grant_type -> outcome -> count
    auth_methods: {}, // client_secret_basic | client_secret_post | none -> count
    introspection_requests: 0,
    refresh_tokens_issued: 0,
    assertions: [], // every client_assertion received, in order (test peer only)
    extras: [], // per token request: {grant, params} of its non-standard form fields
    started_at: new Date().toISOString(),
  };
}

function count(grant, outcome) {
  stats.token_requests += 1;
  const row = (stats.by_grant[grant] ||= {});
  row[outcome] = (row[outcome] || 0) + 1;
}

function countAuth(method) {
  stats.auth_methods[method] = (stats.auth_methods[method] || 0) + 1;
}

const nowSeconds = () => Math.floor(Date.now() / 1000);
const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

function mintRefreshToken(clientId, scope) {
  const value = randomBytes(32).toString('base64url');
  refreshTokens.set(value, { clientId, scope, exp: nowSeconds() + cfg.refresh_ttl, spent: false });
  stats.refresh_tokens_issued += 1;
  return value;
}

async function readRaw(req, limit = 64 * 1024) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > limit) throw new Error('body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

const STANDARD_FIELDS = new Set(['grant_type', 'client_id', 'client_secret', 'client_assertion',
  'client_assertion_type', 'refresh_token', 'scope']);

function recordExtras(grant, form) {
  const params = {};
  for (const [key, value] of Object.entries(form || {})) {
    if (!STANDARD_FIELDS.has(key)) params[key] = value;
  }
  stats.extras.push({ grant, params });
}

function authMethodOf(headers, form) {
  if (/^basic /i.test(headers.authorization || '')) return 'client_secret_basic';
  if (form && form.client_assertion !== undefined) {
    if (typeof form.client_assertion === 'string') stats.assertions.push(form.client_assertion);
    return 'client_assertion';
  }
  if (form && form.client_secret !== undefined) return 'client_secret_post';
  return 'none';
}

// --- keys --------------------------------------------------------------------------------
const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingJwk = { ...privateKey.export({ format: 'jwk' }), kid: 'oidc-peer-rs256', use: 'sig', alg: 'RS256' };

function verifiedJwtPayload(token) {
  const parts = token.split('.');
  if (parts.length !== 3) return undefined;
  try {
    const ok = cryptoVerify('RSA-SHA256', Buffer.from(`${parts[0]}.${parts[1]}`), publicKey,
      Buffer.from(parts[2], 'base64url'));
    return ok ? JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8')) : undefined;
  } catch {
    return undefined;
  }
}

// --- start ---------------------------------------------------------------------------------
// Load oidc-provider only now: its import-time runtime warning goes through the filter above.
const { default: Provider, errors } = await import('oidc-provider');

let provider; // set once the port is known (the issuer contains it)
let providerCallback;

const server = createServer((req, res) => {
  if (req.url.startsWith('/__admin/')) {
    admin(req, res).catch((err) => {
      writeErr(`oidc-peer: admin error: ${err.message}`);
      if (!res.headersSent) sendJson(res, 500, { error: 'server_error' });
    });
    return;
  }
  if (providerCallback && (req.url === REALM_PREFIX || req.url.startsWith(`${REALM_PREFIX}/`)
      || req.url.startsWith(`${REALM_PREFIX}?`))) {
    req.originalUrl = req.url;
    req.url = req.url.slice(REALM_PREFIX.length) || '/';
    providerCallback(req, res);
    return;
  }
  sendJson(res, 404, { error: 'not_found' });
});
server.keepAliveTimeout = 5000;

function sendJson(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

async function admin(req, res) {
  const path = req.url.split('?')[0];
  const text = req.method === 'POST' ? await readRaw(req) : '';
  let body = {};
  if (text.trim()) {
    try {
      body = JSON.parse(text);
    } catch {
      sendJson(res, 400, { error: 'body must be JSON' });
      return;
    }
  }
  if (req.method === 'GET' && path === '/__admin/stats') {
    sendJson(res, 200, { ...stats, pending_failures: faults.length, refresh_tokens_live: liveRefreshCount() });
  } else if (req.method === 'POST' && path === '/__admin/fail') {
    const status = body.status ?? 503;
    const times = body.times ?? 1;
    const delayMs = body.delay_ms ?? 0;
    if (!(Number.isInteger(status) && (status === 0 || (status >= 400 && status <= 599)))) {
      sendJson(res, 400, { error: 'status must be 0 (delay only) or 400..599' });
      return;
    }
    if (!(Number.isInteger(times) && times >= 0 && times <= 1000)) {
      sendJson(res, 400, { error: 'times must be 0..1000' });
      return;
    }
    if (!(Number.isInteger(delayMs) && delayMs >= 0 && delayMs <= 30000)) {
      sendJson(res, 400, { error: 'delay_ms must be 0..30000' });
      return;
    }
    for (let i = 0; i < times; i += 1) {
      faults.push({
        status,
        delayMs,
        body: body.body,
        contentType: body.content_type,
        retryAfter: body.retry_after,
      });
    }
    sendJson(res, 200, { pending_failures: faults.length });
  } else if (req.method === 'POST' && path === '/__admin/revoke-refresh') {
    const revoked = refreshTokens.size;
    refreshTokens.clear();
    sendJson(res, 200, { revoked });
  } else if (req.method === 'POST' && path === '/__admin/reset') {
    faults.length = 0;
    stats = freshStats();
    sendJson(res, 200, { reset: true });
  } else if (req.method === 'POST' && path === '/__admin/active') {
    sendJson(res, 200, { active: await isActive(body.token) });
  } else {
    sendJson(res, 404, { error: 'not_found' });
  }
}

function liveRefreshCount() {
  const now = nowSeconds();
  let n = 0;
  for (const rt of refreshTokens.values()) if (!rt.spent && rt.exp > now) n += 1;
  return n;
}

async function isActive(token) {
  if (typeof token !== 'string' || !token) return false;
  if (token.split('.').length === 3) {
    // oidc-provider does not store JWT access tokens (nor introspect them): judge
    // the way a resource server would, by signature, issuer and expiry.
    const payload = verifiedJwtPayload(token);
    return Boolean(payload && payload.iss === provider.issuer && payload.exp > nowSeconds());
  }
  const found = await provider.ClientCredentials.find(token);
  return Boolean(found?.isValid);
}

// The refresh_token grant, Keycloak-style, registered as a grant type so that
// oidc-provider authenticates the client exactly as for client_credentials.
async function refreshGrant(ctx) {
  const { client, params } = ctx.oidc;
  const value = params.refresh_token;
  if (!value) throw new errors.InvalidRequest('missing required parameter \'refresh_token\'');
  const rt = refreshTokens.get(value);
  const notActive = () => {
    ctx.status = 400;
    ctx.body = { error: 'invalid_grant', error_description: 'Token is not active' };
  };
  if (!rt || rt.exp <= nowSeconds()) {
    notActive();
    return;
  }
  if (rt.clientId !== client.clientId) {
    ctx.status = 400;
    ctx.body = { error: 'invalid_grant', error_description: 'Invalid refresh token. Token client and authorized client don\'t match' };
    return;
  }
  if (rt.spent) {
    ctx.status = 400;
    ctx.body = { error: 'invalid_grant', error_description: 'Stale token' };
    return;
  }
  if (cfg.refresh_rotate) rt.spent = true;

  const token = new provider.ClientCredentials({ client, scope: rt.scope });
  if (cfg.format === 'jwt') {
    token.resourceServer = new provider.ResourceServer(RESOURCE, resourceServerInfo());
  }
  const accessToken = await token.save();
  ctx.body = {
    access_token: accessToken,
    expires_in: token.expiration,
    token_type: token.tokenType,
    ...(token.scope ? { scope: token.scope } : {}),
  };
}

function resourceServerInfo() {
  return {
    scope: cfg.scopes.join(' '),
    audience: 'account',
    accessTokenFormat: 'jwt',
    accessTokenTTL: cfg.ttl,
    jwt: { sign: { alg: 'RS256' } },
  };
}

// Failure injection, stats and the Keycloak refresh fields, around the token route.
async function tokenRouteMiddleware(ctx, next) {
  if (ctx.path === INTROSPECT_PATH && ctx.method === 'POST') {
    stats.introspection_requests += 1;
    await next();
    return;
  }
  if (ctx.path !== TOKEN_PATH || ctx.method !== 'POST') {
    await next();
    return;
  }

  const fault = faults.shift();
  if (fault) {
    if (fault.delayMs) await sleep(fault.delayMs);
    if (fault.status) {
      // We answer ourselves, so we may read the body to know the grant type.
      let form = {};
      try {
        form = Object.fromEntries(new URLSearchParams(await readRaw(ctx.req)));
      } catch { /* counted as unknown */ }
      count(form.grant_type || 'unknown', `injected_${fault.status}`);
      countAuth(authMethodOf(ctx.req.headers, form));
      ctx.status = fault.status;
      if (fault.retryAfter !== undefined) ctx.set('Retry-After', String(fault.retryAfter));
      ctx.set('Cache-Control', 'no-store');
      if (fault.body !== undefined) {
        ctx.type = fault.contentType || 'text/plain';
        ctx.body = typeof fault.body === 'string' ? fault.body : JSON.stringify(fault.body);
      } else {
        ctx.type = 'text/html';
        ctx.body = `<html><head><title>${fault.status}</title></head><body><h1>${fault.status} injected by oidc-peer</h1></body></html>\n`;
      }
      return;
    }
  }

  await next();

  const oidc = ctx.oidc; // defined once oidc-provider's router matched
  const grant = oidc?.params?.grant_type || oidc?.body?.grant_type || 'unknown';
  const method = authMethodOf(ctx.req.headers, oidc?.body);
  countAuth(method);
  recordExtras(grant, oidc?.body);

  const body = ctx.body && typeof ctx.body === 'object' && !Buffer.isBuffer(ctx.body) ? ctx.body : undefined;
  if (ctx.status === 200 && body?.access_token) {
    count(grant, 'ok');
    if (cfg.refresh && (grant === 'client_credentials' || grant === 'refresh_token')) {
      body.refresh_token = mintRefreshToken(oidc.client.clientId, body.scope);
      body.refresh_expires_in = cfg.refresh_ttl;
    } else if (grant === 'client_credentials') {
      body.refresh_expires_in = 0; // what Keycloak says when refresh tokens are off
    }
    body['not-before-policy'] = 0;
  } else {
    let outcome = body?.error || String(ctx.status);
    if (outcome === 'invalid_client' && cfg.bad_client_error !== 'invalid_client') {
      body.error = cfg.bad_client_error;
      outcome = cfg.bad_client_error;
    }
    count(grant, outcome);
  }
  if (verbose) writeErr(`oidc-peer: token grant=${grant} auth=${method} -> ${ctx.status}`);
}

server.on('error', (err) => fatal(`listen failed: ${err.message}`));
server.listen(port, '127.0.0.1', () => {
  const actualPort = server.address().port;
  const base = `http://127.0.0.1:${actualPort}`;
  const issuer = `${base}${REALM_PREFIX}`;

  const clientsMeta = cfg.clients.map((c) => ({
    client_id: c.client_id,
    ...(c.client_secret ? { client_secret: c.client_secret } : {}),
    ...(c.jwks ? { jwks: c.jwks } : {}),
    ...(c.token_endpoint_auth_signing_alg
      ? { token_endpoint_auth_signing_alg: c.token_endpoint_auth_signing_alg } : {}),
    token_endpoint_auth_method: c.token_endpoint_auth_method || 'client_secret_basic',
    grant_types: cfg.refresh ? ['client_credentials', 'refresh_token'] : ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    ...(c.scope ? { scope: c.scope } : {}),
  }));

  const features = {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    // Any authenticated client may introspect any token (oidc-provider's default
    // policy too, spelled out to silence its "you SHOULD change it" notice).
    introspection: { enabled: true, allowedPolicy: async () => true },
    revocation: { enabled: true },
  };
  if (cfg.format === 'jwt') {
    features.resourceIndicators = {
      enabled: true,
      defaultResource: () => RESOURCE,
      getResourceServerInfo: () => resourceServerInfo(),
      useGrantedResource: () => true,
    };
  }

  try {
    provider = new Provider(issuer, {
      clients: clientsMeta,
      scopes: cfg.scopes,
      responseTypes: [],
      jwks: { keys: [signingJwk] },
      cookies: { keys: [randomBytes(32).toString('base64url')] },
      features,
      ttl: { ClientCredentials: cfg.ttl },
      routes: {
        authorization: `${OIDC}/auth`,
        token: TOKEN_PATH,
        introspection: INTROSPECT_PATH,
        revocation: `${OIDC}/revoke`,
        jwks: `${OIDC}/certs`,
        userinfo: `${OIDC}/userinfo`,
        end_session: `${OIDC}/logout`,
      },
    });
  } catch (err) {
    fatal(`provider configuration rejected: ${err.message}`);
  }
  if (cfg.refresh) provider.registerGrantType('refresh_token', refreshGrant, ['refresh_token', 'scope']);
  provider.use(tokenRouteMiddleware);
  provider.on('server_error', (_ctx, err) => writeErr(`oidc-peer: server_error: ${err.message}`));
  providerCallback = provider.callback();

  process.stdout.write(`${JSON.stringify({
    port: actualPort,
    issuer,
    token_url: `${issuer}${TOKEN_PATH}`,
    introspection_url: `${issuer}${INTROSPECT_PATH}`,
    admin_url: `${base}/__admin`,
  })}\n`);
});

let stopping = false;
function shutdown(signal) {
  if (stopping) return;
  stopping = true;
  if (verbose) writeErr(`oidc-peer: ${signal}, stopping`);
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
if (argv['watch-stdin']) {
  // The parent holds our stdin: when it dies, stdin closes and we go too.
  process.stdin.on('end', () => shutdown('stdin closed'));
  process.stdin.on('error', () => shutdown('stdin error'));
  process.stdin.resume();
}
