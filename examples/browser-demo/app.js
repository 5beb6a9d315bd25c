// The demo page: @sessionledger/client in cookie mode.
import { createSessionClient } from '/client.js';

const $ = (id) => document.getElementById(id);
const ledger = document.querySelector('meta[name="ledger-url"]').content;
const client = createSessionClient({ issuer: ledger, mode: 'cookie', refreshMargin: 30 });
window.client = client; // for the console, and the demo's browser test

function showError(e) {
  $('error').textContent = e ? String(e.message || e) : '';
}

function claimsOf(token) {
  const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
  return JSON.parse(atob(part + '='.repeat((4 - (part.length % 4)) % 4)));
}

async function render() {
  const token = await client.getAccessToken().catch((e) => { showError(e); return null; });
  $('signin').hidden = token !== null;
  $('signedin').hidden = token === null;
  if (token === null) return;
  const claims = claimsOf(token);
  $('who').textContent = claims.sub;
  $('sid').textContent = claims.sid;
  $('claims').textContent = JSON.stringify(claims, null, 2);
  const sessions = await client.listSessions();
  const rows = sessions.map((s) => {
    const tr = document.createElement('tr');
    for (const text of [`${s.device?.name || '—'}${s.current ? ' (this one)' : ''}`, s.clientId, s.createdAt, s.lastActiveAt]) {
      const td = document.createElement('td');
      td.textContent = text;
      tr.append(td);
    }
    const td = document.createElement('td');
    if (!s.current) {
      const b = document.createElement('button');
      b.textContent = 'Sign out';
      b.onclick = () => client.revokeSession(s.sessionId).then(render, showError);
      td.append(b);
    }
    tr.append(td);
    return tr;
  });
  $('devices').replaceChildren(...rows);
}

$('signin').onsubmit = async (ev) => {
  ev.preventDefault();
  showError(null);
  try {
    const r = await fetch('/login', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ user: $('user').value }) });
    if (!r.ok) throw new Error(await r.text());
    const { refresh_token } = await r.json();
    await client.signIn(refresh_token);
  } catch (e) {
    showError(e);
  }
};
$('signout').onclick = () => client.signOut().catch(showError);
$('others').onclick = async () => {
  try {
    const n = await client.signOutOtherDevices();
    $('othersResult').textContent = `${n} other session${n === 1 ? '' : 's'} signed out`;
    await render();
  } catch (e) {
    showError(e);
  }
};
client.onChange((e) => {
  $('log').textContent = `${new Date().toLocaleTimeString()}: ${e.type}`;
  render();
});
render();
