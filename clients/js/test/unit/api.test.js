// fetch() and its retry, token mode, self-service, errors. Runs against the built dist/.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createSessionClient, SessionError, SignedOutError } from '../../dist/index.js';
import { FakeLocks, FakeLedger, clock, uniqueIssuer, until, sleep } from '../fakes.js';

function setup(t, { mode = 'cookie', n = 1, storage, locks = new FakeLocks(), ...opts } = {}) {
  const issuer = uniqueIssuer();
  const ledger = new FakeLedger(issuer);
  const c = clock();
  const events = [];
  const clients = [];
  for (let i = 0; i < n; i++) {
    const client = createSessionClient({ issuer, mode, fetch: ledger.fetch, now: c.now, locks, storage, peerTimeout: 500, apiOrigins: ['http://api.test'], ...opts });
    events.push([]);
    client.onChange((e) => events[i].push(e));
    clients.push(client);
  }
  t.after(() => clients.forEach((x) => x.close()));
  return { issuer, ledger, clock: c, clients, events, locks };
}

function mapStorage() {
  const m = new Map();
  return {
    map: m,
    getItem: (k) => (m.has(k) ? m.get(k) : null),
    setItem: (k, v) => void m.set(k, v),
    removeItem: (k) => void m.delete(k),
  };
}

const API = 'http://api.test/thing';
const challenge = (error) => ({ 'WWW-Authenticate': `Bearer realm="api"${error ? `, error="${error}", error_description="no"` : ''}` });
const bearer = (r) => r.headers.get('Authorization');
const apiCalls = (ledger) => ledger.requests.filter((r) => r.url.startsWith('http://api.test/'));

test('fetch adds the bearer token; a 401 invalid_token forces one refresh and one retry', { timeout: 5000 }, async (t) => {
  const { ledger, clients: [a] } = setup(t);
  await a.signIn(ledger.issue().rt);
  const first = await a.getAccessToken();
  // The API refuses the first token although it has not expired (say, a revoked key).
  ledger.resource = (req) => bearer(req) === 'Bearer ' + first
    ? new Response('no', { status: 401, headers: challenge('invalid_token') })
    : new Response('ok', { status: 200 });
  const res = await a.fetch(API, { method: 'POST', body: 'payload', headers: { 'X-Custom': '1' } });
  assert.equal(res.status, 200);
  assert.equal(await res.text(), 'ok');
  assert.equal(ledger.count('/browser/refresh'), 1);
  const calls = apiCalls(ledger);
  assert.equal(calls.length, 2);
  assert.equal(bearer(calls[0]), 'Bearer ' + first);
  const second = await a.getAccessToken();
  assert.notEqual(second, first);
  assert.equal(bearer(calls[1]), 'Bearer ' + second);
  assert.equal(calls[1].body, 'payload');
  assert.equal(calls[1].headers.get('X-Custom'), '1');
});

test('fetch retries a Request with a body, once only', { timeout: 5000 }, async (t) => {
  const { ledger } = setup(t);
  ledger.resource = async () => new Response('no', { status: 401, headers: challenge('invalid_token') });
  const origFetch = ledger.fetch;
  const seen = [];
  const spy = async (input, init) => {
    if (input instanceof Request) seen.push({ text: await input.clone().text(), auth: new Headers(init.headers).get('Authorization') });
    return origFetch(input, init);
  };
  const b = createSessionClient({ issuer: ledger.issuer, mode: 'cookie', fetch: spy, locks: null, broadcastChannel: null, apiOrigins: ['http://api.test'] });
  t.after(() => b.close());
  ledger.cookie = ledger.issue().rt;
  const res = await b.fetch(new Request(API, { method: 'PUT', body: 'data' }));
  assert.equal(res.status, 401);
  assert.equal(seen.length, 2, 'one retry, not more');
  assert.deepEqual(seen.map((s) => s.text), ['data', 'data']);
  assert.notEqual(seen[0].auth, seen[1].auth);
});

test('fetch does not refresh or retry on a plain 401 or a 403', async (t) => {
  const { ledger, clients: [a] } = setup(t);
  await a.signIn(ledger.issue().rt);
  for (const [status, headers] of [[401, challenge(null)], [401, {}], [403, challenge('insufficient_scope')], [403, challenge('invalid_token')]]) {
    ledger.requests.length = 0;
    ledger.resource = () => new Response('no', { status, headers });
    const res = await a.fetch(API);
    assert.equal(res.status, status);
    assert.equal(apiCalls(ledger).length, 1);
  }
  assert.equal(ledger.count('/browser/refresh'), 0);
});

test('fetch returns the 401 when the forced refresh finds the session over; throws SignedOutError with no session', async (t) => {
  const { ledger, clients: [a], events } = setup(t);
  const { sid, rt } = ledger.issue();
  await a.signIn(rt);
  ledger.revoke(sid);
  ledger.resource = () => new Response('no', { status: 401, headers: challenge('invalid_token') });
  const res = await a.fetch(API);
  assert.equal(res.status, 401);
  assert.equal(apiCalls(ledger).length, 1);
  assert.equal(ledger.count('/browser/refresh'), 1);
  assert.deepEqual(events[0].map((e) => e.type), ['signed-in', 'signed-out']);
  await assert.rejects(a.fetch(API), (e) => e instanceof SignedOutError && e instanceof SessionError);
  assert.equal(apiCalls(ledger).length, 1, 'nothing sent without a session');
});

test('a forced refresh is not satisfied by a peer answering with the rejected token', async (t) => {
  const { ledger, clients: [a, b], events, locks, issuer } = setup(t, { n: 2 });
  await a.signIn(ledger.issue().rt);
  await until(() => events[1].length === 1, 2000, 'b signed in');
  const first = await a.getAccessToken();
  assert.equal(await b.getAccessToken(), first); // b holds the same token, and would answer token? with it
  ledger.resource = (req) => bearer(req) === 'Bearer ' + first
    ? new Response('no', { status: 401, headers: challenge('invalid_token') })
    : new Response('ok', { status: 200 });
  // Another tab holds the lock for a while, so a waits for it and then asks its peers.
  let release;
  locks.request('sessionledger-refresh:' + issuer, {}, () => new Promise((r) => { release = r; }));
  const pending = a.fetch(API);
  await sleep(30);
  release();
  const res = await pending;
  assert.equal(res.status, 200);
  assert.equal(ledger.count('/browser/refresh'), 1);
  const calls = apiCalls(ledger);
  assert.equal(calls.length, 2);
  assert.notEqual(bearer(calls[1]), 'Bearer ' + first);
});

test('token mode: signIn rotates the handed-over token, refreshes rotate the stored one, signOut revokes', async (t) => {
  const storage = mapStorage();
  const { ledger, clock, clients: [a], events, issuer, locks } = setup(t, { mode: 'token', storage });
  const key = 'sessionledger:refresh-token:' + issuer;
  const { sid, rt } = ledger.issue();
  await a.signIn(rt);
  const signin = ledger.requests.find((r) => r.path === '/oauth2/token');
  assert.equal(signin.headers.get('Content-Type'), 'application/x-www-form-urlencoded');
  assert.deepEqual(Object.fromEntries(new URLSearchParams(signin.body)), { grant_type: 'refresh_token', refresh_token: rt });
  const rt2 = storage.getItem(key);
  assert.ok(rt2 && rt2 !== rt, 'the handed-over token is rotated out');
  assert.equal(rt2, ledger.sessions.get(sid).rt);
  assert.deepEqual(events[0], [{ type: 'signed-in', sessionId: sid }]);

  clock.advance(301_000);
  await a.getAccessToken();
  const rt3 = storage.getItem(key);
  assert.equal(new URLSearchParams(ledger.requests.at(-1).body).get('refresh_token'), rt2);
  assert.ok(rt3 && rt3 !== rt2);
  assert.equal(rt3, ledger.sessions.get(sid).rt);

  // A tab opened now, sharing the storage, is signed in, and the two rotate once for 40 calls.
  const b = createSessionClient({ issuer, mode: 'token', fetch: ledger.fetch, now: clock.now, locks, storage, peerTimeout: 500 });
  t.after(() => b.close());
  clock.advance(301_000);
  const before = ledger.count('/oauth2/token');
  const calls = [];
  for (let i = 0; i < 20; i++) calls.push(a.getAccessToken(), b.getAccessToken());
  const got = await Promise.all(calls);
  assert.equal(ledger.count('/oauth2/token') - before, 1);
  assert.equal(new Set(got).size, 1);
  assert.equal(storage.getItem(key), ledger.sessions.get(sid).rt);

  const last = storage.getItem(key);
  await a.signOut();
  const revoke = ledger.requests.find((r) => r.path === '/oauth2/revoke');
  assert.deepEqual(Object.fromEntries(new URLSearchParams(revoke.body)), { token: last });
  assert.equal(storage.getItem(key), null);
  assert.equal(ledger.sessions.get(sid).live, false);
  assert.equal(events[0].at(-1).type, 'signed-out');
  assert.equal(await a.getAccessToken(), null);
});

test('token mode: two tabs with a shared lock and storage make one rotation for 20 calls each', async (t) => {
  const storage = mapStorage();
  const { ledger, clock, clients: [a, b], events, issuer } = setup(t, { mode: 'token', storage, n: 2 });
  const { sid, rt } = ledger.issue();
  await a.signIn(rt);
  await until(() => events[1].length === 1, 2000, 'b signed in');
  clock.advance(301_000);
  const before = ledger.count('/oauth2/token');
  const calls = [];
  for (let i = 0; i < 20; i++) calls.push(b.getAccessToken(), a.getAccessToken());
  const got = await Promise.all(calls);
  assert.equal(ledger.count('/oauth2/token') - before, 1);
  assert.equal(new Set(got).size, 1);
  assert.equal(storage.getItem('sessionledger:refresh-token:' + issuer), ledger.sessions.get(sid).rt);
});

test('token mode: invalid_grant removes the stored token and signs out', async (t) => {
  const storage = mapStorage();
  const { ledger, clock, clients: [a], events, issuer } = setup(t, { mode: 'token', storage });
  const { sid, rt } = ledger.issue();
  await a.signIn(rt);
  ledger.revoke(sid);
  clock.advance(301_000);
  assert.equal(await a.getAccessToken(), null);
  assert.equal(storage.getItem('sessionledger:refresh-token:' + issuer), null);
  assert.deepEqual(events[0].map((e) => e.type), ['signed-in', 'signed-out']);
});

test('listSessions follows next_cursor; revokeSession and signOutOtherDevices', async (t) => {
  const { ledger, clients: [a], events } = setup(t);
  const me = ledger.issue();
  const others = [ledger.issue(), ledger.issue(), ledger.issue()];
  await a.signIn(me.rt);
  ledger.pages = [[me.sid, others[0].sid], [others[1].sid], [others[2].sid]];
  const list = await a.listSessions();
  assert.deepEqual(list.map((s) => s.sessionId), [me.sid, ...others.map((o) => o.sid)]);
  assert.deepEqual(list[0], {
    sessionId: me.sid, clientId: 'web', device: { ip: '127.0.0.1', userAgent: 'test', name: 'n-' + me.sid },
    createdAt: '2024-01-01T00:00:00Z', lastActiveAt: '2024-01-02T00:00:00Z', expiresAt: '2024-02-01T00:00:00Z', current: true,
  });
  assert.equal(list[1].current, false);
  const gets = ledger.requests.filter((r) => r.path === '/v1/me/sessions');
  assert.deepEqual(gets.map((r) => new URL(r.url).searchParams.get('cursor')), [null, 'c1', 'c2']);
  for (const r of gets) {
    assert.equal(bearer(r), 'Bearer ' + (await a.getAccessToken()));
    assert.notEqual(r.credentials, 'include');
  }

  await a.revokeSession(others[0].sid);
  assert.equal(ledger.sessions.get(others[0].sid).live, false);
  await assert.rejects(a.revokeSession(others[0].sid), (e) => e instanceof SessionError && e.status === 404);
  assert.equal(await a.signOutOtherDevices(), 2);
  ledger.pages = null;
  assert.deepEqual((await a.listSessions()).map((s) => s.sessionId), [me.sid]);
  await a.revokeSession(me.sid);
  assert.equal(events[0].at(-1).type, 'signed-out');
  assert.equal(await a.getAccessToken(), null);
  await assert.rejects(a.listSessions(), SignedOutError);
});

test('a self-service call whose session ended elsewhere throws SignedOutError after one refresh', async (t) => {
  const { ledger, clients: [a] } = setup(t);
  const me = ledger.issue();
  await a.signIn(me.rt);
  ledger.revoke(me.sid); // say, from another device
  await assert.rejects(a.signOutOtherDevices(), SignedOutError);
  assert.equal(ledger.count('/v1/me/sessions/revoke-others'), 1);
  assert.equal(ledger.count('/browser/refresh'), 1);
});

const leaks2 = (e, tok) => [e.message, String(e), e.stack, e.description, JSON.stringify(e)].some((s) => s && s.includes(tok));

test('errors never contain a token', async (t) => {
  const storage = mapStorage();
  const { ledger, clock, clients: [a], issuer } = setup(t, { mode: 'token', storage });
  await a.signIn(ledger.issue().rt);
  const at = await a.getAccessToken();
  const rt = storage.getItem('sessionledger:refresh-token:' + issuer);
  const leaks = (e) => {
    const texts = [e.message, String(e), e.stack, e.description, e.code, JSON.stringify(e)];
    return texts.some((s) => s && (s.includes(rt) || s.includes(at)));
  };
  clock.advance(301_000);
  // A ledger (or proxy) that echoes the tokens.
  ledger.failNext = { status: 400, body: { error: 'invalid_request', error_description: `bad ${rt} with Bearer ${at}` } };
  await assert.rejects(a.getAccessToken(), (e) => e instanceof SessionError && e.status === 400 && e.code === 'invalid_request' && !leaks(e));
  ledger.failNext = { status: 500, body: { error: rt, error_description: at } };
  await assert.rejects(a.getAccessToken(), (e) => e instanceof SessionError && !leaks(e));
  ledger.throwNext = new TypeError('connect failed for ' + rt);
  await assert.rejects(a.getAccessToken(), (e) => e instanceof SessionError && e.status === 0 && !leaks(e));
  // Tokens not shaped like a JWT or a refresh token are removed too, when the client knows them.
  const issuer2 = uniqueIssuer();
  const l2 = new FakeLedger(issuer2, { opaque: true });
  const b = createSessionClient({ issuer: issuer2, mode: 'cookie', fetch: l2.fetch, locks: null, broadcastChannel: null });
  t.after(() => b.close());
  await b.signIn(l2.issue().rt);
  const at2 = await b.getAccessToken();
  assert.match(at2, /^opaque-access-/);
  const orig = l2.route.bind(l2);
  l2.route = (req, url) => url.pathname === '/v1/me/sessions'
    ? l2.json(500, { title: 'Internal', detail: 'the token was ' + at2 })
    : orig(req, url);
  await assert.rejects(b.listSessions(), (e) => e instanceof SessionError && e.status === 500 && /the token was \[redacted\]/.test(e.message) && !leaks2(e, at2));
  // The session survives the errors.
  assert.ok(await a.getAccessToken());
});

test('a failed sign-in (invalid_grant) leaves the client signed out and throws', async (t) => {
  const { ledger, clients: [a], events } = setup(t);
  await a.signIn(ledger.issue().rt);
  await assert.rejects(a.signIn('slrt_not-a-real-token'), (e) => e instanceof SessionError && e.code === 'invalid_grant' && !e.message.includes('slrt_not-a-real-token'));
  assert.deepEqual(events[0].map((e) => e.type), ['signed-in', 'signed-out']);
  assert.equal(await a.getAccessToken(), null);
});

test('token mode with the default memory storage keeps to itself: no lock, no channel', async (t) => {
  const issuer = uniqueIssuer();
  const ledger = new FakeLedger(issuer);
  // navigator.locks as a browser has it (Node 20 has no navigator).
  const locks = new FakeLocks();
  const saved = Object.getOwnPropertyDescriptor(globalThis, 'navigator');
  Object.defineProperty(globalThis, 'navigator', { value: { locks }, configurable: true, writable: true });
  t.after(() => (saved ? Object.defineProperty(globalThis, 'navigator', saved) : delete globalThis.navigator));
  const a = createSessionClient({ issuer, mode: 'token', fetch: ledger.fetch });
  const b = createSessionClient({ issuer, mode: 'token', fetch: ledger.fetch });
  t.after(() => { a.close(); b.close(); });
  const seen = [];
  b.onChange((e) => seen.push(e.type));
  const peer = new BroadcastChannel('sessionledger:' + issuer);
  t.after(() => peer.close());
  const heard = [];
  peer.onmessage = (ev) => heard.push(ev.data);
  await a.signIn(ledger.issue().rt);
  await b.signIn(ledger.issue().rt);
  const [ta, tb] = [await a.getAccessToken(), await b.getAccessToken()];
  assert.notEqual(ta, tb, 'two sessions');
  await a.signOut();
  await sleep(30);
  assert.deepEqual(heard, []);
  assert.deepEqual(seen, ['signed-in']);
  assert.equal(await b.getAccessToken(), tb);
  assert.equal(locks.requests.length, 0);
  // Whereas cookie mode takes navigator.locks by default.
  const c = createSessionClient({ issuer, mode: 'cookie', fetch: ledger.fetch, broadcastChannel: null });
  t.after(() => c.close());
  await c.signIn(ledger.issue().rt);
  assert.ok(locks.requests.length > 0);
});
