// The openid-client relying party against Tollgate, through the gateway:
// discovery, the password grant, two refreshes, revocation, and what the
// gateway then lets through. oidc_test.go runs it and checks the JSON it
// prints; it exits non-zero on anything unexpected.
import * as client from 'openid-client';

const issuer = process.env.TOLLGATE_ISSUER;
const gateway = process.env.TOLLGATE_GATEWAY;
const username = process.env.TOLLGATE_USER;
const password = process.env.TOLLGATE_PASSWORD;
const clientID = process.env.TOLLGATE_CLIENT_ID;

// books answers the gateway's status for GET /books with token.
async function books(token) {
  const res = await fetch(gateway + '/books', { headers: { authorization: 'Bearer ' + token } });
  await res.arrayBuffer();
  return res.status;
}

// until polls books(token) until it answers want (authz follows the
// revocation feed every 2s), returning the last status and how long it took.
async function until(token, want, ms = 10000) {
  const start = Date.now();
  let got;
  while ((got = await books(token)) !== want && Date.now() - start < ms) {
    await new Promise((r) => setTimeout(r, 50));
  }
  return { status: got, ms: Date.now() - start };
}

// grantError runs f and returns the OAuth error code it failed with.
async function grantError(f) {
  try {
    await f();
    return 'none';
  } catch (e) {
    return e.error ?? e.code ?? String(e);
  }
}

const config = await client.discovery(new URL(issuer), clientID, undefined, client.None(), {
  execute: [client.allowInsecureRequests],
});
const meta = config.serverMetadata();
const out = {
  issuer: meta.issuer,
  token_endpoint: meta.token_endpoint,
  revocation_endpoint: meta.revocation_endpoint,
  grant_types: meta.grant_types_supported,
};

const t0 = await client.genericGrantRequest(config, 'password', { username, password });
const t1 = await client.refreshTokenGrant(config, t0.refresh_token);
const t2 = await client.refreshTokenGrant(config, t1.refresh_token);
out.rotated = new Set([t0.refresh_token, t1.refresh_token, t2.refresh_token]).size === 3;
out.token_type = t2.token_type;

out.fresh_before = await books(t2.access_token);
await client.tokenRevocation(config, t1.access_token);
const revoked = await until(t1.access_token, 401);
out.revoked_access = revoked.status;
out.revoked_access_ms = revoked.ms;
out.fresh_after_revocation = await books(t2.access_token);

// Reuse of the first refresh token: refused, and the family ends.
out.used_refresh = await grantError(() => client.refreshTokenGrant(config, t0.refresh_token));
out.family_refresh = await grantError(() => client.refreshTokenGrant(config, t2.refresh_token));
const family = await until(t2.access_token, 401);
out.family_access = family.status;

// A new login is a new session, unaffected.
const t3 = await client.genericGrantRequest(config, 'password', { username, password });
out.new_session = await books(t3.access_token);

console.log(JSON.stringify(out));
