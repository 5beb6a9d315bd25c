// Refresh: single flight, the margin, cross-tab coordination, orphaned
// locks, sign-out on invalid_grant. Runs against the built dist/.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createSessionClient, SessionError } from '../../dist/index.js';
import { FakeLocks, FakeLedger, clock, uniqueIssuer, until, sleep } from '../fakes.js';

/** n clients ("tabs") of one issuer, sharing a ledger, a clock and (unless turned off) a lock manager and real BroadcastChannels. */
// peerTimeout is longer than the default 150 ms so that a loaded CI machine does not miss answers.
function tabs(t, { n = 1, mode = 'cookie', locks = new FakeLocks(), channel = true, expiresIn = 300, peerTimeout = 500, ...opts } = {}) {
  const issuer = uniqueIssuer();
  const ledger = new FakeLedger(issuer, { expiresIn });
  const c = clock();
  const events = [];
  const clients = [];
  for (let i = 0; i < n; i++) {
    const client = createSessionClient({
      issuer, mode, fetch: ledger.fetch, now: c.now, locks, peerTimeout, apiOrigins: ['http://api.test'],
      ...(channel ? {} : { broadcastChannel: null }),
      ...opts,
    });
    events.push([]);
    client.onChange((e) => events[i].push(e));
    clients.push(client);
  }
  t.after(() => clients.forEach((x) => x.close()));
  return { issuer, ledger, clock: c, clients, events, locks, lockName: 'sessionledger-refresh:' + issuer };
}

const types = (evs) => evs.map((e) => e.type);

for (const [label, opts] of [
  ['without locks or channel', { locks: null, channel: false }],
  ['with locks and channel', {}],
]) {
  test(`single flight ${label}: 20 concurrent getAccessToken make one refresh`, async (t) => {
    const { ledger, clock, clients: [a] } = tabs(t, opts);
    await a.signIn(ledger.issue().rt);
    const first = await a.getAccessToken();
    clock.advance(301_000);
    const got = await Promise.all(Array.from({ length: 20 }, () => a.getAccessToken()));
    assert.equal(ledger.count('/browser/refresh'), 1);
    assert.equal(new Set(got).size, 1);
    assert.notEqual(got[0], first);
    // And a fresh tab (no token yet, the cookie set) also refreshes once.
    const { ledger: l2, clients: [b] } = tabs(t, opts);
    l2.cookie = l2.issue().rt;
    const got2 = await Promise.all(Array.from({ length: 20 }, () => b.getAccessToken()));
    assert.equal(l2.count('/browser/refresh'), 1);
    assert.equal(new Set(got2).size, 1);
    assert.ok(got2[0]);
  });
}

test('the margin: no refresh while the token is valid for at least refreshMargin, a refresh once it is not', async (t) => {
  for (const margin of [undefined, 60]) {
    const m = (margin ?? 30) * 1000;
    const { ledger, clock, clients: [a] } = tabs(t, { expiresIn: 300, refreshMargin: margin });
    await a.signIn(ledger.issue().rt);
    const first = await a.getAccessToken();
    clock.advance(300_000 - m - 1000);
    assert.equal(await a.getAccessToken(), first);
    clock.advance(1000); // exactly the margin left
    assert.equal(await a.getAccessToken(), first);
    assert.equal(ledger.count('/browser/refresh'), 0);
    clock.advance(1); // less than the margin left
    const second = await a.getAccessToken();
    assert.notEqual(second, first);
    assert.equal(ledger.count('/browser/refresh'), 1);
  }
});

test('two tabs sharing a lock and a BroadcastChannel: 20 concurrent calls each make one refresh', async (t) => {
  const { ledger, clock, clients: [a, b], events } = tabs(t, { n: 2 });
  await a.signIn(ledger.issue().rt);
  await until(() => events[1].length === 1, 2000, 'b to hear of the sign-in');
  assert.deepEqual(types(events[1]), ['signed-in']);
  assert.equal(await b.getAccessToken(), await a.getAccessToken());
  clock.advance(301_000);
  const calls = [];
  for (let i = 0; i < 20; i++) calls.push(b.getAccessToken(), a.getAccessToken());
  const got = await Promise.all(calls);
  assert.equal(ledger.count('/browser/refresh'), 1);
  assert.equal(new Set(got).size, 1);
  await until(() => events[0].length === 2 && events[1].length === 2, 2000, 'refreshed events');
  assert.deepEqual(types(events[0]), ['signed-in', 'refreshed']);
  assert.deepEqual(types(events[1]), ['signed-in', 'refreshed']);
});

test('a new tab asks the others for their token instead of rotating', async (t) => {
  const { ledger, issuer, clock, clients: [a], locks } = tabs(t);
  await a.signIn(ledger.issue().rt);
  const tok = await a.getAccessToken();
  const c = createSessionClient({ issuer, mode: 'cookie', fetch: ledger.fetch, now: clock.now, locks, peerTimeout: 500 });
  t.after(() => c.close());
  const seen = [];
  c.onChange((e) => seen.push(e.type));
  assert.equal(await c.getAccessToken(), tok);
  assert.equal(ledger.count('/browser/refresh'), 0);
  assert.deepEqual(seen, ['refreshed']);
});

test('an orphaned lock: the tab refreshes without it after lockTimeout, not before, and does not hang', { timeout: 5000 }, async (t) => {
  const { ledger, clock, clients: [a], locks, lockName } = tabs(t, { lockTimeout: 300 });
  await a.signIn(ledger.issue().rt);
  locks.holdForever(lockName); // a hung tab
  clock.advance(301_000);
  const start = Date.now();
  let done = 0;
  const calls = Array.from({ length: 20 }, () => a.getAccessToken().then((v) => { done++; return v; }));
  await sleep(200);
  assert.equal(ledger.count('/browser/refresh'), 0, 'refreshed before lockTimeout');
  assert.equal(done, 0);
  const got = await Promise.all(calls);
  const elapsed = Date.now() - start;
  assert.ok(elapsed >= 295, `refreshed after ${elapsed} ms, before lockTimeout`);
  assert.ok(elapsed < 3000, `took ${elapsed} ms`);
  assert.equal(ledger.count('/browser/refresh'), 1);
  assert.equal(new Set(got).size, 1);
  assert.ok(got[0]);
});

test('invalid_grant: signed out, one signed-out event, the other tab told; no more refreshes', async (t) => {
  const { ledger, clock, clients: [a, b], events } = tabs(t, { n: 2 });
  const { sid, rt } = ledger.issue();
  await a.signIn(rt);
  await until(() => events[1].length === 1, 2000, 'b signed in');
  ledger.revoke(sid);
  clock.advance(301_000);
  assert.equal(await a.getAccessToken(), null);
  assert.equal(await a.getAccessToken(), null);
  assert.deepEqual(events[0], [{ type: 'signed-in', sessionId: sid }, { type: 'signed-out', sessionId: sid }]);
  await until(() => events[1].length === 2, 2000, 'b to hear of the sign-out');
  assert.deepEqual(events[1][1], { type: 'signed-out', sessionId: sid });
  assert.equal(await b.getAccessToken(), null);
  assert.equal(ledger.count('/browser/refresh'), 1, 'a signed-out tab does not keep asking');
  await assert.rejects(a.fetch('http://api.test/x'), { name: 'SignedOutError' });
});

test('429, 503, network errors and a refused Origin throw and keep the session', async (t) => {
  const { ledger, clock, clients: [a], events } = tabs(t);
  await a.signIn(ledger.issue().rt);
  clock.advance(301_000);
  for (const fail of [
    { status: 429, body: { error: 'slow_down' } },
    { status: 503, body: { title: 'Service Unavailable' }, headers: { 'Retry-After': '1' } },
    { status: 403, body: { error: 'invalid_request', error_description: "the request's Origin is missing" } },
  ]) {
    ledger.failNext = fail;
    await assert.rejects(a.getAccessToken(), (e) => e instanceof SessionError && e.status === fail.status);
  }
  ledger.throwNext = new TypeError('fetch failed');
  await assert.rejects(a.getAccessToken(), (e) => e instanceof SessionError && e.status === 0 && e.cause instanceof TypeError);
  assert.deepEqual(types(events[0]), ['signed-in']);
  assert.ok(await a.getAccessToken(), 'the session still works');
  assert.deepEqual(types(events[0]), ['signed-in', 'refreshed']);
});

test('signOut in one tab signs the other out without a request', async (t) => {
  const { ledger, clients: [a, b], events } = tabs(t, { n: 2 });
  const { sid, rt } = ledger.issue();
  await a.signIn(rt);
  await until(() => events[1].length === 1, 2000, 'b signed in');
  await a.signOut();
  assert.equal(ledger.count('/browser/signout'), 1);
  assert.equal(ledger.sessions.get(sid).live, false);
  assert.equal(ledger.cookie, null);
  assert.deepEqual(types(events[0]), ['signed-in', 'signed-out']);
  await until(() => events[1].length === 2, 2000, 'b signed out');
  assert.equal(await b.getAccessToken(), null);
  assert.equal(ledger.count('/browser/refresh'), 0);
  // 'signed-out' fires once per transition: signing out again, here or there, fires nothing.
  await b.signOut();
  await a.signOut();
  await sleep(30);
  assert.deepEqual(types(events[0]), ['signed-in', 'signed-out']);
  assert.deepEqual(types(events[1]), ['signed-in', 'signed-out']);
});

test('the wire protocol: lock and channel names, broadcasts and token?/token! answers', async (t) => {
  const { ledger, issuer, clock, clients: [a], events, locks } = tabs(t, { refreshMargin: 30 });
  const peer = new BroadcastChannel('sessionledger:' + issuer);
  t.after(() => peer.close());
  const heard = [];
  peer.onmessage = (ev) => heard.push(ev.data);
  const { sid, rt } = ledger.issue();
  await a.signIn(rt);
  const tok = await a.getAccessToken();
  await until(() => heard.length === 1, 2000, 'signed-in broadcast');
  assert.deepEqual(heard[0], { type: 'signed-in', accessToken: tok, expiresAt: clock.t + 300_000, sessionId: sid, lifetime: 300_000 });
  assert.ok(locks.requests.every((r) => r.name === 'sessionledger-refresh:' + issuer));

  peer.postMessage({ type: 'token?', id: 'q1' });
  await until(() => heard.length === 2, 2000, 'an answer');
  assert.deepEqual(heard[1], { type: 'token!', id: 'q1', accessToken: tok, expiresAt: clock.t + 300_000, sessionId: sid, lifetime: 300_000 });

  // No answer with a token valid for less than the margin.
  clock.advance(300_000 - 29_000);
  peer.postMessage({ type: 'token?', id: 'q2' });
  await sleep(50);
  assert.equal(heard.length, 2);

  // A peer's refresh is taken, and fires 'refreshed'.
  peer.postMessage({ type: 'refreshed', accessToken: 'peer-token-123456', expiresAt: clock.t + 300_000, sessionId: sid });
  await until(() => events[0].length === 2, 2000, 'refreshed from a peer');
  assert.deepEqual(events[0][1], { type: 'refreshed', sessionId: sid });
  assert.equal(await a.getAccessToken(), 'peer-token-123456');
  assert.equal(ledger.count('/browser/refresh'), 0);

  // A refresh of a's own is broadcast.
  clock.advance(300_000);
  const own = await a.getAccessToken();
  await until(() => heard.some((m) => m.type === 'refreshed'), 2000, 'refreshed broadcast');
  assert.deepEqual(heard.find((m) => m.type === 'refreshed'), { type: 'refreshed', accessToken: own, expiresAt: clock.t + 300_000, sessionId: sid, lifetime: 300_000 });

  // A peer's sign-out of an older session is ignored; of this one, obeyed.
  peer.postMessage({ type: 'signed-out', sessionId: 'S-another-session' });
  await sleep(30);
  assert.equal(await a.getAccessToken(), own);
  peer.postMessage({ type: 'signed-out', sessionId: sid });
  await until(() => events[0].at(-1).type === 'signed-out', 2000, 'signed-out');
  assert.equal(await a.getAccessToken(), null);
  assert.equal(ledger.count('/browser/refresh'), 1);
});

test('onChange returns an unsubscribe; a throwing listener does not break the others', async (t) => {
  const { ledger, clients: [a] } = tabs(t);
  const seen = [];
  const orig = console.error;
  console.error = () => {};
  t.after(() => { console.error = orig; });
  const off = a.onChange((e) => seen.push(e.type));
  a.onChange(() => { throw new Error('listener bug'); });
  await a.signIn(ledger.issue().rt);
  off();
  await a.signOut();
  assert.deepEqual(seen, ['signed-in']);
});

test('cookie-mode requests are JSON with credentials; the issuer tolerates a trailing slash', async (t) => {
  const issuer = uniqueIssuer();
  const ledger = new FakeLedger(issuer);
  const c = clock();
  const a = createSessionClient({ issuer: issuer + '/', mode: 'cookie', fetch: ledger.fetch, now: c.now, locks: null, broadcastChannel: null });
  t.after(() => a.close());
  const { rt } = ledger.issue();
  await a.signIn(rt);
  c.advance(301_000);
  await a.getAccessToken();
  await a.signOut();
  const [si, re, so] = ledger.requests;
  assert.deepEqual([si.url, re.url, so.url], ['/browser/signin', '/browser/refresh', '/browser/signout'].map((p) => issuer + p));
  for (const r of [si, re, so]) {
    assert.equal(r.method, 'POST');
    assert.equal(r.credentials, 'include');
    assert.equal(r.headers.get('Content-Type'), 'application/json');
  }
  assert.deepEqual(JSON.parse(si.body), { refresh_token: rt });
  assert.equal(re.body, '{}');
  assert.equal(so.body, '{}');
});
