// The security review's fixes: where fetch() may send the token, the forced
// refresh throttle, short-lived tokens, request timeouts, revoking the current
// session. Runs against the built dist/.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createSessionClient, SessionError, SignedOutError } from '../../dist/index.js';
import { FakeLocks, FakeLedger, clock, uniqueIssuer, until, sleep } from '../fakes.js';

function setup(t, { mode = 'cookie', n = 1, storage, locks = new FakeLocks(), expiresIn = 300, fetch, ...opts } = {}) {
  const issuer = uniqueIssuer();
  const ledger = new FakeLedger(issuer, { expiresIn });
  const c = clock();
  const events = [];
  const clients = [];
  for (let i = 0; i < n; i++) {
    const client = createSessionClient({ issuer, mode, fetch: fetch ? fetch(ledger) : ledger.fetch, now: c.now, locks, storage, peerTimeout: 500, ...opts });
    events.push([]);
    client.onChange((e) => events[i].push(e));
    clients.push(client);
  }
  t.after(() => clients.forEach((x) => x.close()));
  return { issuer, ledger, clock: c, clients, events, locks, lockName: 'sessionledger-refresh:' + issuer };
}

function mapStorage() {
  const m = new Map();
  return {
    getItem: (k) => (m.has(k) ? m.get(k) : null),
    setItem: (k, v) => void m.set(k, v),
    removeItem: (k) => void m.delete(k),
  };
}

const types = (evs) => evs.map((e) => e.type);
const bearer = (r) => r.headers.get('Authorization');
const nonLedger = (ledger) => ledger.requests.filter((r) => !r.url.startsWith(ledger.issuer + '/'));
const leaks = (e, tok) => [e.message, String(e), e.stack, e.description, JSON.stringify(e)].some((s) => s && s.includes(tok));

/** Sets globalThis.location (as a page has it) for one test. */
function withLocation(t, href) {
  const saved = Object.getOwnPropertyDescriptor(globalThis, 'location');
  const u = new URL(href);
  Object.defineProperty(globalThis, 'location', { value: { href: u.href, origin: u.origin }, configurable: true, writable: true });
  t.after(() => (saved ? Object.defineProperty(globalThis, 'location', saved) : delete globalThis.location));
}

// --- 1. apiOrigins -----------------------------------------------------------

const refused = (e) => e instanceof SessionError && !(e instanceof SignedOutError) && e.status === 0 && e.code === 'origin_not_allowed';

test('apiOrigins default: fetch sends the token to the issuer and the page only; elsewhere it throws and sends nothing', async (t) => {
  const { ledger, issuer, clients: [a] } = setup(t);
  await a.signIn(ledger.issue().rt);
  const at = await a.getAccessToken();
  ledger.resource = () => new Response('ok');
  const before = ledger.requests.length;
  for (const url of ['http://api.test/thing', 'https://evil.example/steal', issuer.replace(':8080', ':8081') + '/x', 'data:text/plain,hi']) {
    await assert.rejects(a.fetch(url), (e) => refused(e) && !leaks(e, at), url);
    await assert.rejects(a.fetch(new URL(url)), refused, url);
  }
  await assert.rejects(a.fetch(new Request('https://evil.example/steal', { headers: { 'X-A': '1' } })), refused);
  // No location here (Node): a relative URL cannot be resolved, so it goes nowhere.
  await assert.rejects(a.fetch('/v1/me/sessions'), refused);
  assert.equal(ledger.requests.length, before, 'nothing sent');
  // The issuer's origin is allowed by default, in any spelling of it.
  const res = await a.fetch(issuer.toUpperCase().replace('HTTP://', 'http://') + '/v1/me/sessions');
  assert.equal(res.status, 200);
  assert.equal(bearer(ledger.requests.at(-1)), 'Bearer ' + at);
});

test("apiOrigins default in a page: the page's origin, relative URLs resolved against location.href", async (t) => {
  withLocation(t, 'https://app.example/shop/cart?x=1');
  const { ledger, issuer, clients: [a] } = setup(t, {
    // As a browser does, the fetch resolves relative URLs against the page.
    fetch: (l) => (input, init) => l.fetch(typeof input === 'string' ? new URL(input, globalThis.location.href).href : input, init),
  });
  await a.signIn(ledger.issue().rt);
  ledger.resource = () => new Response('ok');
  for (const url of ['/api/orders', 'api/orders', 'https://APP.example:443/api/orders']) {
    const res = await a.fetch(url);
    assert.equal(res.status, 200, url);
    assert.equal(bearer(ledger.requests.at(-1)), 'Bearer ' + (await a.getAccessToken()));
  }
  assert.deepEqual(nonLedger(ledger).map((r) => r.url), ['https://app.example/api/orders', 'https://app.example/shop/api/orders', 'https://app.example/api/orders']);
  assert.equal((await a.fetch(issuer + '/v1/me/sessions')).status, 200);
  for (const url of ['//evil.example/x', 'http://app.example/api', 'https://app.example:8443/api']) {
    await assert.rejects(a.fetch(url), refused, url);
  }
});

test('apiOrigins listed: normalized like the ledger, they replace the default; self-service still reaches the issuer', async (t) => {
  withLocation(t, 'https://app.example/');
  const { ledger, issuer, clients: [a] } = setup(t, { apiOrigins: ['HTTPS://API.Example.com:443/', ' http://localhost:8080 ', 'http://[::1]:80'] });
  await a.signIn(ledger.issue().rt);
  ledger.resource = () => new Response('ok');
  for (const url of ['https://api.example.com/v1/x', 'https://api.EXAMPLE.com:443/y', 'http://localhost:8080/', 'http://[::1]/z']) {
    assert.equal((await a.fetch(url)).status, 200, url);
  }
  for (const url of ['http://api.example.com/v1/x', 'https://api.example.com:8443/', 'https://sub.api.example.com/', 'http://localhost/', 'https://app.example/', issuer + '/v1/me/sessions']) {
    await assert.rejects(a.fetch(url), refused, url);
  }
  assert.equal((await a.listSessions()).length, 1);
  assert.equal(await a.signOutOtherDevices(), 0);
});

test("apiOrigins refuses '*' and anything but scheme://host[:port]", () => {
  const issuer = uniqueIssuer();
  const ledger = new FakeLedger(issuer);
  for (const bad of [['*'], ['https://api.example.com/v1'], ['https://api.example.com?x'], ['https://user@api.example.com'], ['ftp://api.example.com'], ['api.example.com'], [''], [42], 'https://api.example.com']) {
    assert.throws(() => createSessionClient({ issuer, mode: 'cookie', fetch: ledger.fetch, broadcastChannel: null, locks: null, apiOrigins: bad }), TypeError, JSON.stringify(bad));
  }
  createSessionClient({ issuer, mode: 'cookie', fetch: ledger.fetch, broadcastChannel: null, locks: null, apiOrigins: [] }).close();
});

// --- 2. the forced refresh throttle -------------------------------------------

const API = 'http://api.test/thing';
const rejectAll = () => new Response('no', { status: 401, headers: { 'WWW-Authenticate': 'Bearer realm="api", error="invalid_token", error_description="bad audience"' } });

test('an API that refuses every token: 5 fetches make at most one forced refresh; another after minForcedRefreshInterval', async (t) => {
  const { ledger, clock, clients: [a], events } = setup(t, { apiOrigins: ['http://api.test'] });
  await a.signIn(ledger.issue().rt);
  ledger.resource = rejectAll;
  for (let i = 0; i < 5; i++) {
    const res = await a.fetch(API);
    assert.equal(res.status, 401);
    assert.equal(res.headers.get('WWW-Authenticate').includes('invalid_token'), true);
    clock.advance(500);
  }
  assert.equal(ledger.count('/browser/refresh'), 1, 'one forced refresh for five refused calls');
  assert.equal(nonLedger(ledger).length, 6, 'the first call retried once, the others returned the 401 as is');
  // The 401s inside the window did not spoil the token: getAccessToken does not refresh either.
  await a.getAccessToken();
  assert.equal(ledger.count('/browser/refresh'), 1);
  // Five seconds after the last forced refresh, the next refused call may force one again.
  clock.advance(2500);
  assert.equal((await a.fetch(API)).status, 401);
  assert.equal(ledger.count('/browser/refresh'), 2);
  assert.equal((await a.fetch(API)).status, 401);
  assert.equal(ledger.count('/browser/refresh'), 2);
  assert.deepEqual(types(events[0]), ['signed-in', 'refreshed', 'refreshed']);
});

test('minForcedRefreshInterval: 0 still forces at most one refresh per access token', async (t) => {
  const { ledger, clients: [a] } = setup(t, { apiOrigins: ['http://api.test'], minForcedRefreshInterval: 0 });
  await a.signIn(ledger.issue().rt);
  ledger.resource = rejectAll;
  // Ten concurrent calls with one token: one forced refresh, shared, and each retried once.
  const got = await Promise.all(Array.from({ length: 10 }, () => a.fetch(API)));
  assert.ok(got.every((r) => r.status === 401));
  assert.equal(ledger.count('/browser/refresh'), 1);
  assert.equal(nonLedger(ledger).length, 20);
});

test('a refused token that was replaced meanwhile is retried with its successor, without a refresh', async (t) => {
  const { ledger, issuer, clock, clients: [a], events } = setup(t, { apiOrigins: ['http://api.test'] });
  const { sid, rt } = ledger.issue();
  await a.signIn(rt);
  const first = await a.getAccessToken();
  const peer = new BroadcastChannel('sessionledger:' + issuer);
  t.after(() => peer.close());
  ledger.resource = async (req) => {
    if (bearer(req) !== 'Bearer ' + first) return new Response('ok');
    // While the API looks at the old token, another tab refreshes.
    peer.postMessage({ type: 'refreshed', accessToken: 'peer-token-123456', expiresAt: clock.t + 300_000, sessionId: sid, lifetime: 300_000 });
    await until(() => events[0].length === 2, 2000, 'the peer token');
    return rejectAll();
  };
  const res = await a.fetch(API);
  assert.equal(res.status, 200);
  assert.equal(bearer(nonLedger(ledger)[1]), 'Bearer peer-token-123456');
  assert.equal(ledger.count('/browser/refresh'), 0);
});

// --- 3. tokens shorter-lived than refreshMargin -------------------------------

test('a token living less than refreshMargin is fresh while half its life is left: expires_in 10, margin 30', async (t) => {
  for (const mode of ['cookie', 'token']) {
    const { ledger, clock, clients: [a], events } = setup(t, { mode, expiresIn: 10, storage: mode === 'token' ? mapStorage() : undefined });
    const path = mode === 'cookie' ? '/browser/refresh' : '/oauth2/token';
    const { rt } = ledger.issue();
    if (mode === 'cookie') ledger.cookie = rt; // a page opened with the cookie set
    else await a.signIn(rt);
    const before = ledger.count(path);
    const got = [];
    for (let i = 0; i < 5; i++) {
      got.push(await a.getAccessToken());
      clock.advance(1000);
    }
    assert.equal(new Set(got).size, 1, mode);
    assert.equal(ledger.count(path) - before, mode === 'cookie' ? 1 : 0, `${mode}: one rotation for five calls`);
    // 10 s lifetime, 5 s gone: exactly half is left, still fresh; with 4 s left, one refresh.
    assert.equal(await a.getAccessToken(), got[0]);
    clock.advance(1000);
    const next = await a.getAccessToken();
    assert.notEqual(next, got[0]);
    assert.equal(await a.getAccessToken(), next);
    assert.equal(ledger.count(path) - before, mode === 'cookie' ? 2 : 1, `${mode}: one more rotation with 4 s of 10 left`);
    assert.equal(events[0].filter((e) => e.type === 'refreshed').length, mode === 'cookie' ? 2 : 1);
  }
});

test('a long-lived token still refreshes at refreshMargin; the lifetime travels with the token between tabs', async (t) => {
  const { ledger, issuer, clock, clients: [a, b], events } = setup(t, { n: 2, expiresIn: 10 });
  const { sid, rt } = ledger.issue();
  const peer = new BroadcastChannel('sessionledger:' + issuer);
  t.after(() => peer.close());
  const heard = [];
  peer.onmessage = (ev) => heard.push(ev.data);
  await a.signIn(rt);
  await until(() => events[1].length === 1 && heard.length === 1, 2000, 'b signed in');
  assert.equal(heard[0].lifetime, 10_000);
  // b has the token from a's broadcast, with its lifetime: fresh for b too with 6 s of 10 left.
  clock.advance(4000);
  assert.equal(await b.getAccessToken(), await a.getAccessToken());
  assert.equal(ledger.count('/browser/refresh'), 0);
  // A message without a lifetime (an older client) is judged by refreshMargin alone: 10 s < 30 s is stale.
  peer.postMessage({ type: 'refreshed', accessToken: 'old-peer-token-1234', expiresAt: clock.t + 10_000, sessionId: sid });
  await until(() => events[1].length === 2, 2000, 'b adopts the peer token');
  const c = await b.getAccessToken();
  assert.notEqual(c, 'old-peer-token-1234');
  assert.equal(ledger.count('/browser/refresh'), 1);
  // A malformed lifetime is ignored like a missing one.
  peer.postMessage({ type: 'refreshed', accessToken: 'odd-peer-token-1234', expiresAt: clock.t + 20_000, sessionId: sid, lifetime: 'long' });
  await until(() => events[1].length === 4, 2000, 'b adopts the odd token'); // its own refresh's event came in between
  assert.notEqual(await b.getAccessToken(), 'odd-peer-token-1234');
  assert.equal(ledger.count('/browser/refresh'), 2);
  // With expires_in 300 the margin rules: 31 s left is fresh, 29 s is not.
  const { ledger: l2, clock: c2, clients: [x] } = setup(t, { expiresIn: 300 });
  await x.signIn(l2.issue().rt);
  const first = await x.getAccessToken();
  c2.advance(269_000);
  assert.equal(await x.getAccessToken(), first);
  c2.advance(2000);
  assert.notEqual(await x.getAccessToken(), first);
});

// --- 4. requestTimeout --------------------------------------------------------

/**
 * A fetch in front of the fake ledger that records each request's signal and, for the paths in
 * `hang`, never answers: it rejects when the signal aborts, or (ignoreSignal) not even then.
 */
function stalling(hang, { ignoreSignal = false } = {}) {
  const seen = [];
  const make = (l) => (input, init = {}) => {
    const path = new URL(typeof input === 'string' ? input : input.url).pathname;
    seen.push({ path, signal: init.signal });
    if (!hang.has(path)) return l.fetch(input, init);
    return new Promise((_, reject) => {
      if (!ignoreSignal && init.signal) init.signal.addEventListener('abort', () => reject(init.signal.reason));
    });
  };
  return { make, seen };
}

const timedOut = (e) => e instanceof SessionError && e.status === 0 && e.code === 'timeout';

test('requestTimeout: a stalled refresh throws timeout, keeps the session, releases the lock and the in-flight refresh', { timeout: 10000 }, async (t) => {
  const hang = new Set();
  const f = stalling(hang);
  const { ledger, clock, clients: [a], events, locks, lockName } = setup(t, { fetch: f.make, requestTimeout: 150 });
  await a.signIn(ledger.issue().rt);
  clock.advance(301_000);
  hang.add('/browser/refresh');
  const start = Date.now();
  const calls = Array.from({ length: 5 }, () => a.getAccessToken());
  for (const c of calls) await assert.rejects(c, timedOut);
  const elapsed = Date.now() - start;
  assert.ok(elapsed >= 140 && elapsed < 3000, `timed out after ${elapsed} ms`);
  assert.equal(locks.isHeld(lockName), false, 'the lock is released');
  assert.deepEqual(types(events[0]), ['signed-in'], 'not signed out');
  // Once the ledger answers again, the next call refreshes: the stalled one is not still in flight.
  hang.clear();
  const tok = await a.getAccessToken();
  assert.ok(tok);
  assert.equal(ledger.count('/browser/refresh'), 1);
  assert.deepEqual(types(events[0]), ['signed-in', 'refreshed']);
});

test('requestTimeout: every request to the ledger carries a deadline; the app\'s fetch only its own signal', { timeout: 10000 }, async (t) => {
  for (const mode of ['cookie', 'token']) {
    const f = stalling(new Set());
    const { ledger, clock, clients: [a] } = setup(t, { mode, fetch: f.make, storage: mode === 'token' ? mapStorage() : undefined, apiOrigins: ['http://api.test'] });
    ledger.resource = () => new Response('ok');
    const me = ledger.issue();
    ledger.issue();
    await a.signIn(me.rt);
    clock.advance(301_000);
    await a.getAccessToken();
    await a.listSessions();
    await a.signOutOtherDevices();
    await a.fetch('http://api.test/x');
    const mine = new AbortController();
    await a.fetch('http://api.test/y', { signal: mine.signal });
    await a.signOut();
    const ledgerPaths = f.seen.filter((r) => !r.path.startsWith('/x') && !r.path.startsWith('/y'));
    assert.deepEqual(ledgerPaths.map((r) => r.path), mode === 'cookie'
      ? ['/browser/signin', '/browser/refresh', '/v1/me/sessions', '/v1/me/sessions/revoke-others', '/browser/signout']
      : ['/oauth2/token', '/oauth2/token', '/v1/me/sessions', '/v1/me/sessions/revoke-others', '/oauth2/revoke']);
    for (const r of ledgerPaths) assert.ok(r.signal instanceof AbortSignal && !r.signal.aborted, `${mode} ${r.path}`);
    assert.equal(f.seen.find((r) => r.path === '/x').signal, undefined, 'no timeout added to the app\'s fetch');
    assert.equal(f.seen.find((r) => r.path === '/y').signal, mine.signal);
  }
});

test('requestTimeout: sign-in, sign-out, token-mode refresh and self-service calls time out too, even if fetch ignores the signal', { timeout: 10000 }, async (t) => {
  const storage = mapStorage();
  const hang = new Set();
  const f = stalling(hang, { ignoreSignal: true });
  const { ledger, clock, clients: [a], events, issuer, locks, lockName } = setup(t, { mode: 'token', storage, fetch: f.make, requestTimeout: 100 });
  const key = 'sessionledger:refresh-token:' + issuer;
  hang.add('/oauth2/token');
  await assert.rejects(a.signIn(ledger.issue().rt), timedOut);
  hang.clear();
  await a.signIn(ledger.issue().rt);
  const rt = storage.getItem(key);
  clock.advance(301_000);
  hang.add('/oauth2/token');
  await assert.rejects(a.getAccessToken(), timedOut);
  assert.equal(storage.getItem(key), rt, 'the refresh token is kept');
  assert.equal(locks.isHeld(lockName), false);
  hang.clear();
  const at = await a.getAccessToken();
  for (const [path, call] of [
    ['/v1/me/sessions', () => a.listSessions()],
    ['/v1/me/sessions/revoke-others', () => a.signOutOtherDevices()],
    ['/oauth2/revoke', () => a.signOut()],
  ]) {
    hang.add(path);
    await assert.rejects(call(), (e) => timedOut(e) && !leaks(e, at), path);
    hang.delete(path);
  }
  assert.equal(await a.getAccessToken(), at, 'still signed in');
  assert.equal(locks.isHeld(lockName), false);
  assert.ok(!types(events[0]).includes('signed-out'));
  await a.signOut();
  assert.equal(storage.getItem(key), null);
});

test('requestTimeout without AbortSignal.timeout: an AbortController and a timer, cleared after each request', { timeout: 10000 }, async (t) => {
  const saved = Object.getOwnPropertyDescriptor(AbortSignal, 'timeout');
  Object.defineProperty(AbortSignal, 'timeout', { value: undefined, configurable: true, writable: true });
  const [st, ct] = [globalThis.setTimeout, globalThis.clearTimeout];
  const armed = new Set();
  const cleared = new Set();
  globalThis.setTimeout = (fn, ms, ...rest) => {
    const id = st(fn, ms, ...rest);
    if (ms === 1234) armed.add(id);
    return id;
  };
  globalThis.clearTimeout = (id) => {
    if (armed.has(id)) cleared.add(id);
    return ct(id);
  };
  t.after(() => {
    Object.defineProperty(AbortSignal, 'timeout', saved);
    globalThis.setTimeout = st;
    globalThis.clearTimeout = ct;
  });
  const hang = new Set();
  const f = stalling(hang);
  const { ledger, clock, clients: [a], events } = setup(t, { fetch: f.make, requestTimeout: 1234 });
  await a.signIn(ledger.issue().rt);
  clock.advance(301_000);
  await a.getAccessToken();
  assert.equal(armed.size, 2);
  assert.deepEqual([...cleared], [...armed], 'each timer is cleared once the answer is read');
  hang.add('/browser/refresh');
  clock.advance(301_000);
  await assert.rejects(a.getAccessToken(), timedOut);
  assert.deepEqual(types(events[0]), ['signed-in', 'refreshed']);
  hang.clear();
  assert.ok(await a.getAccessToken());
});

// --- 5. revoking the current session ------------------------------------------

test('cookie mode: revokeSession of the current session signs out here and in the other tabs, then clears the cookie', async (t) => {
  const { ledger, clients: [a, b], events } = setup(t, { n: 2 });
  const me = ledger.issue();
  const other = ledger.issue();
  await a.signIn(me.rt);
  await until(() => events[1].length === 1, 2000, 'b signed in');
  await a.revokeSession(other.sid);
  assert.equal(ledger.count('/browser/signout'), 0, 'another session: no sign-out');
  assert.ok(await a.getAccessToken());
  await a.revokeSession(me.sid);
  assert.equal(ledger.sessions.get(me.sid).live, false);
  assert.deepEqual(events[0], [{ type: 'signed-in', sessionId: me.sid }, { type: 'signed-out', sessionId: me.sid }]);
  assert.equal(ledger.count('/browser/signout'), 1);
  assert.equal(ledger.cookie, null, 'the cookie with the dead token is cleared');
  const last = ledger.requests.filter((r) => r.path.startsWith('/browser/') || r.path.startsWith('/v1/')).at(-1);
  assert.equal(last.path, '/browser/signout', 'after the DELETE');
  await until(() => events[1].length === 2, 2000, 'b signed out');
  assert.deepEqual(events[1][1], { type: 'signed-out', sessionId: me.sid });
  assert.equal(await a.getAccessToken(), null);
  assert.equal(await b.getAccessToken(), null);
  assert.equal(ledger.count('/browser/refresh'), 0);
  await sleep(30);
  assert.equal(events[0].length, 2, "'signed-out' fired once");
});

test('cookie mode: a failed /browser/signout after revoking the current session is ignored', async (t) => {
  for (const fail of ['throw', 500]) {
    const { ledger, clients: [a], events } = setup(t, {
      fetch: (l) => (input, init) => {
        if (new URL(input).pathname !== '/browser/signout') return l.fetch(input, init);
        if (fail === 'throw') return Promise.reject(new TypeError('network down'));
        return Promise.resolve(l.json(500, { error: 'server_error' }));
      },
    });
    const me = ledger.issue();
    await a.signIn(me.rt);
    await a.revokeSession(me.sid);
    assert.deepEqual(types(events[0]), ['signed-in', 'signed-out'], String(fail));
    assert.equal(await a.getAccessToken(), null);
  }
});

test('token mode: revokeSession of the current session removes the stored refresh token and signs out', async (t) => {
  const storage = mapStorage();
  const { ledger, clients: [a, b], events, issuer } = setup(t, { mode: 'token', storage, n: 2 });
  const key = 'sessionledger:refresh-token:' + issuer;
  const me = ledger.issue();
  await a.signIn(me.rt);
  await until(() => events[1].length === 1, 2000, 'b signed in');
  assert.ok(storage.getItem(key));
  await a.revokeSession(me.sid);
  assert.equal(storage.getItem(key), null);
  assert.deepEqual(types(events[0]), ['signed-in', 'signed-out']);
  await until(() => events[1].length === 2, 2000, 'b signed out');
  assert.equal(await a.getAccessToken(), null);
  assert.equal(await b.getAccessToken(), null);
  assert.equal(ledger.count('/browser/signout') + ledger.count('/oauth2/revoke'), 0);
});
