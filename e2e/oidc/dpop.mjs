// DPoP (RFC 9449) against Tollgate with clients nobody here wrote:
// openid-client gets a DPoP-bound token through the password grant and
// refreshes it with proofs; panva's dpop makes the proofs for the calls
// to /books through the gateway, good ones and each kind of bad one.
// dpop_test.go runs it and checks the JSON it prints case by case; every
// WWW-Authenticate challenge is reported as openid-client parses it.
import * as client from 'openid-client';
import * as dpop from 'dpop';

const issuer = process.env.TOLLGATE_ISSUER;
const gateway = process.env.TOLLGATE_GATEWAY;
const username = process.env.TOLLGATE_USER;
const password = process.env.TOLLGATE_PASSWORD;
const clientID = process.env.TOLLGATE_CLIENT_ID;

const config = await client.discovery(new URL(issuer), clientID, undefined, client.None(), {
  execute: [client.allowInsecureRequests],
});
const meta = config.serverMetadata();
const out = {
  issuer: meta.issuer,
  dpop_signing_alg_values_supported: meta.dpop_signing_alg_values_supported ?? null,
};

// claims decodes a JWT's payload (the client may look at its own token).
function claims(jwt) {
  return JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString());
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

// challenges is what openid-client understands from a response's
// WWW-Authenticate header: its own parser, through fetchProtectedResource
// handed this response.
async function challenges(res) {
  const c = new client.Configuration(meta, clientID, undefined, client.None());
  client.allowInsecureRequests(c);
  c[client.customFetch] = async () => new Response(null, { status: res.status, headers: res.headers });
  try {
    await client.fetchProtectedResource(c, 'unused', new URL(gateway + '/books'), 'GET');
    return null;
  } catch (e) {
    if (e instanceof client.WWWAuthenticateChallengeError) return e.cause;
    throw e;
  }
}

// report is one case: the status and the challenges of the answer.
async function report(name, res) {
  await res.arrayBuffer();
  return {
    name,
    status: res.status,
    www_authenticate: res.headers.get('www-authenticate'),
    challenges: res.status === 401 ? await challenges(res) : null,
  };
}

// The client's key, and an attacker's.
const keyPair = await client.randomDPoPKeyPair('ES256');
const otherKey = await dpop.generateKeyPair('ES256');
const handle = client.getDPoPHandle(config, keyPair);
const otherHandle = client.getDPoPHandle(config, otherKey);
out.jkt = await dpop.calculateThumbprint(keyPair.publicKey);

// The token endpoint (§5): the password grant and refreshes, with proofs
// by the client's key.
const t0 = await client.genericGrantRequest(config, 'password', { username, password }, { DPoP: handle });
out.token_type = t0.token_type;
out.cnf_jkt = claims(t0.access_token).cnf?.jkt ?? null;
const t1 = await client.refreshTokenGrant(config, t0.refresh_token, undefined, { DPoP: handle });
out.refresh_token_type = t1.token_type;
out.refresh_cnf_jkt = claims(t1.access_token).cnf?.jkt ?? null;
// A bound refresh token with a proof by another key, or with none, is
// refused and stays usable by its own key.
out.refresh_other_key = await grantError(() => client.refreshTokenGrant(config, t1.refresh_token, undefined, { DPoP: otherHandle }));
out.refresh_no_proof = await grantError(() => client.refreshTokenGrant(config, t1.refresh_token));
out.refresh_after_refusals = await grantError(() => client.refreshTokenGrant(config, t1.refresh_token, undefined, { DPoP: handle }));

// The resource (§7), through the gateway, with the latest access token.
const token = t1.access_token;
const books = new URL(gateway + '/books');
const get = (headers) => fetch(books, { headers, redirect: 'manual' });
const proof = (opts = {}) =>
  dpop.generateProof(opts.key ?? keyPair, opts.url ?? books.href, opts.method ?? 'GET', undefined, 'ath' in opts ? opts.ath : token);
const cases = [];

// viaClient is one request made by openid-client itself, which signs its
// own proof and reads a challenge itself (it throws on one).
async function viaClient(name, method, body, headers, dpopHandle) {
  try {
    return await report(name, await client.fetchProtectedResource(config, token, books, method, body, headers, { DPoP: dpopHandle }));
  } catch (e) {
    return {
      name,
      status: e.status ?? 0,
      www_authenticate: e.response?.headers.get('www-authenticate') ?? null,
      challenges: e.cause ?? null,
      error: String(e),
    };
  }
}
cases.push(await viaClient('openid-client GET /books', 'GET', undefined, undefined, handle));
cases.push(await viaClient('openid-client POST /books', 'POST',
  JSON.stringify({ name: 'Bound', author: 'RFC 9449' }), new Headers({ 'content-type': 'application/json' }), handle));
cases.push(await viaClient('openid-client, proof by another key', 'GET', undefined, undefined, otherHandle));

const used = await proof();
cases.push(await report('fresh proof', await get({ authorization: 'DPoP ' + token, dpop: used })));
cases.push(await report('another fresh proof', await get({ authorization: 'DPoP ' + token, dpop: await proof() })));
cases.push(await report('no proof', await get({ authorization: 'DPoP ' + token })));
cases.push(await report('as Bearer', await get({ authorization: 'Bearer ' + token })));
cases.push(await report('as Bearer, with a proof', await get({ authorization: 'Bearer ' + token, dpop: await proof() })));
cases.push(await report('in x-access-tokens', await get({ 'x-access-tokens': token })));
cases.push(await report('in x-access-tokens, with a proof', await get({ 'x-access-tokens': token, dpop: await proof() })));
cases.push(await report('proof by another key', await get({ authorization: 'DPoP ' + token, dpop: await proof({ key: otherKey }) })));
cases.push(await report('replayed proof', await get({ authorization: 'DPoP ' + token, dpop: used })));
cases.push(await report('proof for another method', await get({ authorization: 'DPoP ' + token, dpop: await proof({ method: 'POST' }) })));
cases.push(await report('proof for another URL', await get({ authorization: 'DPoP ' + token, dpop: await proof({ url: gateway + '/books/1' }) })));
cases.push(await report("proof with another token's ath", await get({ authorization: 'DPoP ' + token, dpop: await proof({ ath: t0.access_token }) })));
cases.push(await report('proof without ath', await get({ authorization: 'DPoP ' + token, dpop: await proof({ ath: undefined }) })));
cases.push(await report('two proofs', await get({ authorization: 'DPoP ' + token, dpop: (await proof()) + ', ' + (await proof()) })));
out.cases = cases;

console.log(JSON.stringify(out));
