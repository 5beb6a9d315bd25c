// The browser demo (examples/browser-demo) as a newcomer uses it, in
// Debian's headless Chromium driven by playwright-core. Run by go test
// (cmd/sessionledger/browser_chromium_e2e_test.go), which starts the ledger
// and the demo and passes DEMO (its URL), LEDGER, ADMIN and CHROMIUM.
// Every check prints "ok: …"; the first failure throws.
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const { DEMO, LEDGER, ADMIN } = process.env;
const ok = (what) => console.log(`ok: ${what}`);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
});
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  // The browser logs a failed load as a console error: the first page load's
  // refresh without a cookie is answered 400 invalid_grant, as it should be.
  const failed = [];
  page.on('response', (r) => { if (r.status() >= 400) failed.push(`${r.status()} ${new URL(r.url()).pathname}`); });
  page.on('console', (m) => { if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) errors.push(m.text()); });
  await page.goto(DEMO);
  await page.locator('#signin').waitFor({ state: 'visible' });
  await page.fill('#user', 'dana');
  await page.click('#signin button');
  await page.locator('#signedin').waitFor({ state: 'visible' });
  const claims = JSON.parse(await page.textContent('#claims'));
  assert.equal(claims.sub, 'dana');
  assert.equal(claims.client_id, 'browser-demo');
  assert.equal(claims.demo, true);
  assert.equal(await page.evaluate(() => document.cookie), '');
  ok('sign in: the page shows the access token\'s claims, and no cookie is visible to it');

  // Another device of dana's, opened by the backend.
  const r = await fetch(LEDGER + '/v1/sessions', {
    method: 'POST', headers: { Authorization: `Bearer ${ADMIN}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ user_id: 'dana', device: { name: 'phone' } }),
  });
  assert.equal(r.status, 201);
  await page.reload();
  await page.locator('#devices tr').nth(1).waitFor();
  assert.equal(await page.locator('#devices tr').count(), 2);
  assert.match(await page.textContent('#devices'), /phone/);
  ok('the devices list shows both sessions after a reload (the cookie kept the page signed in)');

  await page.click('#others');
  await page.waitForFunction(() => document.getElementById('othersResult').textContent.includes('1 other session'));
  await page.waitForFunction(() => document.querySelectorAll('#devices tr').length === 1);
  ok('sign out other devices leaves one device');

  await page.click('#signout');
  await page.locator('#signin').waitFor({ state: 'visible' });
  const sessions = await fetch(LEDGER + '/v1/users/dana/sessions', { headers: { Authorization: `Bearer ${ADMIN}` } }).then((r) => r.json());
  assert.equal(sessions.sessions.length, 0);
  assert.deepEqual(errors, []);
  assert.deepEqual([...new Set(failed)], ['400 /browser/refresh'], 'the only failed loads are refreshes without a cookie');
  ok('sign out: no session of dana\'s is left, and the page logged no error');
} finally {
  await browser.close();
}
