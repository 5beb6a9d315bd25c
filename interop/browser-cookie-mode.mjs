// Cookie mode and @sessionledger/client in a real browser: Debian's headless
// Chromium driven by playwright-core (no browser download). Run by go test
// (cmd/sessionledger/browser_chromium_e2e_test.go), which starts the ledger
// with --browser-origins http://localhost:$APP_PORT and passes:
//   LEDGER      the ledger's URL (its issuer), http://localhost:<port>
//   ADMIN       the admin token (this script is also the app's backend)
//   APP_PORT    the port of the app origin, the one listed origin
//   CLIENT_JS   the built client (clients/js/dist/index.js)
//   CHROMIUM    the browser (default /usr/bin/chromium)
//   GRACE_MS    the ledger's --reuse-grace
// Every check prints "ok: …"; the first failure throws.
import http from 'node:http';
import fs from 'node:fs';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const LEDGER = process.env.LEDGER;
const ADMIN = process.env.ADMIN;
const APP_PORT = Number(process.env.APP_PORT);
const CLIENT_JS = fs.readFileSync(process.env.CLIENT_JS);
const GRACE_MS = Number(process.env.GRACE_MS);
const MARGIN = 2; // s: the client's refreshMargin
const LOCK_TIMEOUT = 1500; // ms: the client's bounded wait for another tab's lock
const ACCESS_TTL = 5; // s: access tokens of the test sessions
const APP = `http://localhost:${APP_PORT}`;

const ok = (what) => console.log(`ok: ${what}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function admin(method, path, body) {
  const res = await fetch(LEDGER + path, {
    method,
    headers: { Authorization: `Bearer ${ADMIN}`, ...(body ? { 'Content-Type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

async function history(sid) {
  const { status, body } = await admin('GET', `/v1/sessions/${sid}/events`);
  assert.equal(status, 200);
  return body.events.map((e) => ({ type: e.type, reason: e.data?.reason, actor: e.data?.actor, outcome: e.data?.outcome }));
}
const count = (events, type) => events.filter((e) => e.type === type).length;

// The app's backend: after its own login, it opens a session at the ledger
// and hands the page the first refresh token. It keeps what it handed out,
// so that the test can replay one "from elsewhere".
const handedOut = [];
const page = `<!doctype html><meta charset="utf-8"><title>app</title>
<script type="module">
import { createSessionClient } from '/client.js';
window.client = createSessionClient({ issuer: ${JSON.stringify(LEDGER)}, mode: 'cookie', refreshMargin: ${MARGIN}, lockTimeout: ${LOCK_TIMEOUT} });
window.events = [];
client.onChange((e) => events.push(e.type));
window.login = async (user) => {
  const r = await fetch('/login', { method: 'POST', body: user });
  const { refresh_token } = await r.json();
  await client.signIn(refresh_token);
  return (await client.getAccessToken()) !== null;
};
window.ready = true;
</script>`;

function listen(host, handler) {
  return new Promise((resolve) => {
    const srv = http.createServer(handler);
    srv.listen(0, host === 'localhost' ? '127.0.0.1' : host, () => resolve({ srv, port: srv.address().port }));
  });
}

const appServer = http.createServer(async (req, res) => {
  if (req.url === '/client.js') {
    res.writeHead(200, { 'Content-Type': 'text/javascript' });
    return res.end(CLIENT_JS);
  }
  if (req.url === '/login' && req.method === 'POST') {
    let user = '';
    for await (const chunk of req) user += chunk;
    const { status, body } = await admin('POST', '/v1/sessions', {
      user_id: user, device: { name: 'chromium', user_agent: req.headers['user-agent'] },
      policy: { access_token_ttl: ACCESS_TTL, absolute_lifetime: 3600, inactivity_timeout: 0 },
    });
    if (status !== 201) {
      res.writeHead(500);
      return res.end();
    }
    handedOut.push(body);
    res.writeHead(200, { 'Content-Type': 'application/json' });
    return res.end(JSON.stringify({ refresh_token: body.refresh_token }));
  }
  res.writeHead(200, { 'Content-Type': 'text/html' });
  res.end(page);
});
await new Promise((r) => appServer.listen(APP_PORT, '127.0.0.1', r));

// Attackers: a page on an unlisted origin of the same site (localhost: the
// cookie is sent, SameSite does not stop it, only the ledger's checks do)
// and one of another site (127.0.0.1).
const attack = (target) => `<!doctype html><meta charset="utf-8"><title>evil</title><body>
<form id="f" method="POST" action="${LEDGER}${target}" enctype="text/plain" target="sink"><input name='{"a":"' value='"}'></form>
<iframe name="sink"></iframe>
<script>
window.tryFetch = async (path, init) => {
  try {
    const r = await fetch(${JSON.stringify(LEDGER)} + path, { method: 'POST', credentials: 'include', ...init });
    return { status: r.status, type: r.type, body: r.type === 'opaque' ? '' : await r.text() };
  } catch (e) { return { error: String(e) }; }
};
</script>`;
const evil = await listen('localhost', (req, res) => {
  res.writeHead(200, { 'Content-Type': 'text/html' });
  res.end(attack(new URL(req.url, 'http://x').searchParams.get('target') || '/browser/refresh'));
});
const EVIL_SAME_SITE = `http://localhost:${evil.port}`;
const EVIL_CROSS_SITE = `http://127.0.0.1:${evil.port}`;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
});
const context = await browser.newContext();
const ledgerBodies = []; // every body the ledger sent the browser
context.on('response', async (r) => {
  if (!r.url().startsWith(LEDGER)) return;
  try { ledgerBodies.push(await r.text()); } catch { /* a redirect or an aborted load has none */ }
});

async function openTab() {
  const p = await context.newPage();
  p.on('pageerror', (e) => console.log(`page error: ${e}`));
  await p.goto(APP + '/');
  await p.waitForFunction(() => window.ready === true);
  return p;
}
const accessToken = (p) => p.evaluate(() => client.getAccessToken());
// meStatus is what the ledger says of a tab's token: 200 for a live session's.
const meStatus = (token) => fetch(LEDGER + '/v1/me/sessions', { headers: { Authorization: `Bearer ${token}` } }).then((r) => r.status);

try {
  // --- Sign in; the refresh cookie is out of the page's reach.
  const tab1 = await openTab();
  const tab2 = await openTab();
  assert.equal(await tab1.evaluate(() => login('alice')), true);
  const sid = handedOut.at(-1).session_id;
  const cookies = await context.cookies(LEDGER);
  const rc = cookies.find((c) => c.name.startsWith('__Host-sessionledger-refresh-'));
  assert.ok(rc, `the browser keeps the refresh cookie: ${JSON.stringify(cookies.map((c) => c.name))}`);
  assert.equal(rc.httpOnly, true);
  assert.equal(rc.secure, true);
  assert.equal(rc.sameSite, 'Strict');
  for (const p of [tab1, tab2]) {
    assert.equal(await p.evaluate(() => document.cookie), '', 'document.cookie is empty in the app');
  }
  ok('the refresh cookie is httpOnly, Secure, SameSite=Strict, and document.cookie does not show it');
  // The other tab learns of the sign-in and takes the token without a rotation of its own.
  await tab2.waitForFunction(() => events.includes('signed-in'), null, { timeout: 5000 });
  assert.notEqual(await accessToken(tab2), null);
  assert.equal(count(await history(sid), 'session.rotated'), 2, 'the sign-in\'s two rotations, and none for the second tab');
  ok('a second tab hears of the sign-in and gets a token without a rotation');

  // --- Two tabs, 20 calls each at once, around expiry: one rotation.
  await sleep((ACCESS_TTL - MARGIN) * 1000 + 300); // the token is now within the margin
  const before = await history(sid);
  const at = Date.now() + 300;
  const burst = (p) => p.evaluate(async (at) => {
    await new Promise((r) => setTimeout(r, at - Date.now()));
    return Promise.all(Array.from({ length: 20 }, () => client.getAccessToken()));
  }, at);
  const [r1, r2] = await Promise.all([burst(tab1), burst(tab2)]);
  const after = await history(sid);
  const rotations = count(after, 'session.rotated') - count(before, 'session.rotated');
  assert.equal(rotations, 1, `rotations during the burst: ${rotations}`);
  assert.equal(count(after, 'session.revoked'), 0);
  assert.equal(count(after, 'session.reused'), 0, 'no tab fell back on the grace window');
  const tokens = new Set([...r1, ...r2]);
  assert.equal(tokens.size, 1, `the 40 calls got ${tokens.size} tokens`);
  for (const t of tokens) assert.equal(await meStatus(t), 200);
  ok('two tabs × 20 getAccessToken() around expiry: one rotation, no reuse, no revocation, one working token in both');

  // --- A tab holding the refresh lock and then frozen, or crashed, does not
  // block another past the bounded wait.
  const lockName = `sessionledger-refresh:${LEDGER}`;
  for (const how of ['frozen', 'crashed']) {
    const holder = await openTab();
    await holder.evaluate((name) => new Promise((held) => {
      navigator.locks.request(name, () => { held(); return new Promise(() => {}); });
    }), lockName);
    const cdp = await context.newCDPSession(holder);
    if (how === 'frozen') {
      await cdp.send('Page.setWebLifecycleState', { state: 'frozen' });
    } else {
      cdp.send('Page.crash').catch(() => {}); // the renderer dies, and with it the tab
      await sleep(500);
    }
    await sleep((ACCESS_TTL - MARGIN) * 1000 + 300); // tab1's token is within the margin again
    const t0 = Date.now();
    const token = await accessToken(tab1);
    const waited = Date.now() - t0;
    assert.notEqual(token, null);
    assert.equal(await meStatus(token), 200);
    assert.ok(waited < LOCK_TIMEOUT + 2000, `waited ${waited} ms with the lock held by a ${how} tab`);
    ok(`a tab holding the lock and ${how}: the other refreshed in ${waited} ms (bounded wait ${LOCK_TIMEOUT} ms)`);
    await holder.close().catch(() => {});
  }
  assert.equal(count(await history(sid), 'session.revoked'), 0);

  // --- Pages of unlisted origins cannot refresh or sign out with the user's cookie.
  const quiet = await history(sid);
  for (const origin of [EVIL_SAME_SITE, EVIL_CROSS_SITE]) {
    for (const target of ['/browser/refresh', '/browser/signout']) {
      const e = await context.newPage();
      await e.goto(`${origin}/?target=${target}`);
      const cors = await e.evaluate((t) => tryFetch(t, { headers: { 'Content-Type': 'application/json' }, body: '{}' }), target);
      assert.ok(cors.error, `a credentialed JSON fetch from ${origin} was answered: ${JSON.stringify(cors)}`);
      const simple = await e.evaluate((t) => tryFetch(t, { mode: 'no-cors', headers: { 'Content-Type': 'text/plain' }, body: '{}' }), target);
      assert.equal(simple.type, 'opaque', JSON.stringify(simple));
      await Promise.all([e.waitForEvent('requestfinished', { timeout: 5000 }).catch(() => {}), e.evaluate(() => document.getElementById('f').submit())]);
      await sleep(300);
      await e.close();
    }
  }
  assert.deepEqual(await history(sid), quiet, 'the attacks changed the session');
  assert.notEqual(await tab1.evaluate(() => client.getAccessToken()), null);
  ok('from an unlisted origin of the same site and from another site: credentialed fetch, no-cors fetch and form post to refresh and sign-out changed nothing');

  // --- Sign-out in one tab reaches the other.
  await tab2.evaluate(() => { events.length = 0; });
  await tab1.evaluate(() => client.signOut());
  await tab2.waitForFunction(() => events.includes('signed-out'), null, { timeout: 5000 });
  assert.equal(await accessToken(tab2), null);
  assert.equal(await accessToken(tab1), null);
  const out = await history(sid);
  assert.deepEqual(out.at(-1), { type: 'session.revoked', reason: 'signed_out', actor: 'client', outcome: undefined });
  assert.equal((await context.cookies(LEDGER)).some((c) => c.name.startsWith('__Host-sessionledger-refresh-')), false, 'the cookie was cleared');
  ok('sign-out in one tab: the session is revoked, the cookie cleared, the other tab signed out');

  // --- A replay of an old refresh token from elsewhere revokes the session; both tabs see it.
  await tab1.evaluate(() => { events.length = 0; });
  await tab2.evaluate(() => { events.length = 0; });
  assert.equal(await tab1.evaluate(() => login('bob')), true);
  await tab2.waitForFunction(() => events.includes('signed-in'), null, { timeout: 5000 });
  const bob = handedOut.at(-1);
  await sleep(GRACE_MS + 200);
  const replay = await fetch(LEDGER + '/oauth2/token', {
    method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: bob.refresh_token }),
  });
  assert.equal(replay.status, 400);
  assert.equal((await replay.json()).error, 'invalid_grant');
  const res = await tab1.evaluate(async (ledger) => (await client.fetch(ledger + '/v1/me/sessions')).status, LEDGER);
  assert.equal(res, 401, 'the revoked session\'s token is refused, and the retry after a refresh too');
  for (const p of [tab1, tab2]) {
    await p.waitForFunction(() => events.includes('signed-out'), null, { timeout: 5000 });
    assert.equal(await accessToken(p), null);
  }
  const bobEvents = await history(bob.session_id);
  assert.ok(bobEvents.some((e) => e.type === 'session.reused' && e.outcome === 'family_revoked'));
  assert.equal(bobEvents.at(-1).type, 'session.revoked');
  ok('a replay of the token the page was handed revokes the session; both tabs see signed-out');

  // --- "Sign out other devices" leaves only the current session.
  assert.equal(await tab1.evaluate(() => login('carol')), true);
  const carol = handedOut.at(-1);
  for (const device of ['phone', 'tablet']) {
    assert.equal((await admin('POST', '/v1/sessions', { user_id: 'carol', device: { name: device } })).status, 201);
  }
  const listed = await tab1.evaluate(() => client.listSessions());
  assert.equal(listed.length, 3);
  assert.deepEqual(listed.filter((s) => s.current).map((s) => s.sessionId), [carol.session_id]);
  assert.equal(await tab1.evaluate(() => client.signOutOtherDevices()), 2);
  const left = await tab2.evaluate(() => client.listSessions());
  assert.deepEqual(left.map((s) => [s.sessionId, s.current]), [[carol.session_id, true]]);
  const { body: users } = await admin('GET', '/v1/users/carol/sessions');
  assert.deepEqual(users.sessions.map((s) => s.session_id), [carol.session_id]);
  ok('sign out other devices: 2 revoked, only the current session left (seen from both tabs and by the admin API)');

  // No body the ledger sent the browser held a refresh token.
  assert.ok(ledgerBodies.length > 10, `${ledgerBodies.length} bodies seen`);
  for (const b of ledgerBodies) assert.ok(!b.includes('slrt_'), 'a ledger response body held a refresh token');
  ok(`none of the ${ledgerBodies.length} response bodies from the ledger held a refresh token`);
} finally {
  await browser.close();
  appServer.close();
  evil.srv.close();
}
