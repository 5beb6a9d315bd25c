// Fakes for the unit tests: a Web Locks manager with a real queue, a
// controllable clock and an in-memory ledger behind a fake fetch.

let issuerSeq = 0;
/** A fresh issuer per test, so real BroadcastChannels of different tests never meet. */
export function uniqueIssuer() {
  issuerSeq++;
  return `http://ledger-${process.pid}-${issuerSeq}.test:8080`;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Waits until cond() is true, polling; fails after ms. */
export async function until(cond, ms = 2000, what = 'condition') {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

export function clock(start = 1_700_000_000_000) {
  const c = { t: start, now: () => c.t, advance: (ms) => { c.t += ms; } };
  return c;
}

function abortError() {
  const e = new Error('the lock request was aborted');
  e.name = 'AbortError';
  return e;
}

/**
 * navigator.locks as far as the client uses it: exclusive locks, a FIFO
 * queue per name, { ifAvailable } and { signal }.
 */
export class FakeLocks {
  constructor() {
    this.held = new Map(); // name -> true
    this.queues = new Map(); // name -> [grant]
    this.requests = [];
  }

  request(name, options, cb) {
    if (typeof options === 'function') {
      cb = options;
      options = {};
    }
    this.requests.push({ name, ifAvailable: !!options.ifAvailable, signal: !!options.signal });
    if (options.ifAvailable && options.signal) return Promise.reject(new Error('NotSupportedError'));
    if (options.ifAvailable && this.held.get(name)) {
      return Promise.resolve().then(() => cb(null));
    }
    if (options.signal && options.signal.aborted) return Promise.reject(abortError());
    return new Promise((resolve, reject) => {
      const grant = () => {
        if (options.signal) options.signal.removeEventListener('abort', onAbort);
        this.held.set(name, true);
        Promise.resolve()
          .then(() => cb({ name, mode: 'exclusive' }))
          .then(
            (v) => { this.release(name); resolve(v); },
            (e) => { this.release(name); reject(e); },
          );
      };
      const onAbort = () => {
        const q = this.queues.get(name) || [];
        const i = q.indexOf(grant);
        if (i >= 0) {
          q.splice(i, 1);
          reject(abortError());
        }
      };
      if (options.signal) options.signal.addEventListener('abort', onAbort);
      if (!this.held.get(name)) grant();
      else {
        if (!this.queues.has(name)) this.queues.set(name, []);
        this.queues.get(name).push(grant);
      }
    });
  }

  release(name) {
    this.held.set(name, false);
    const q = this.queues.get(name) || [];
    const next = q.shift();
    if (next) next();
  }

  /** Takes the lock and never gives it back (a hung or frozen tab). */
  holdForever(name) {
    this.request(name, {}, () => new Promise(() => {}));
  }

  isHeld(name) {
    return !!this.held.get(name);
  }
}

function b64url(s) {
  return Buffer.from(s).toString('base64url');
}

/**
 * An in-memory ledger. Access tokens look like JWTs, refresh tokens like
 * slrt_ tokens. The cookie jar is the browser's: shared by all clients
 * (tabs) using this ledger.
 */
export class FakeLedger {
  constructor(issuer, { expiresIn = 300, delay = 5, opaque = false } = {}) {
    this.issuer = issuer;
    this.opaque = opaque; // access tokens that do not look like JWTs
    this.expiresIn = expiresIn;
    this.delay = delay;
    this.seq = 0;
    this.cookie = null;
    this.sessions = new Map(); // sid -> { live, rt, prev, at, gen }
    this.accessTokens = new Map(); // at -> sid
    this.requests = [];
    this.counts = {};
    /** Set to { status, body, headers } to answer the next refresh (cookie or token) with it. */
    this.failNext = null;
    /** Set to an Error to make the next fetch of any ledger path throw it. */
    this.throwNext = null;
    /** A handler for non-ledger URLs: (req) => Response. */
    this.resource = null;
    this.pages = null;
    this.fetch = this.fetch.bind(this);
  }

  count(path) {
    return this.counts[path] || 0;
  }

  /** A session's first refresh token, as the app's backend would hand it over. */
  issue() {
    const sid = 'S' + String(++this.seq).padStart(25, '0');
    const rt = this.newRefreshToken(sid);
    this.sessions.set(sid, { sid, live: true, rt, prev: null, gen: 0, result: null });
    return { sid, rt };
  }

  newRefreshToken(sid) {
    return 'slrt_' + b64url(`${sid}.${++this.seq}.secret`).replace(/=+$/, '');
  }

  newAccessToken(sid) {
    if (this.opaque) {
      const at = `opaque-access-${++this.seq}-${sid}`;
      this.accessTokens.set(at, sid);
      return at;
    }
    const header = b64url(JSON.stringify({ alg: 'EdDSA', typ: 'at+jwt' }));
    const body = b64url(JSON.stringify({ sid, n: ++this.seq }));
    const at = `${header}.${body}.sig${this.seq}`;
    this.accessTokens.set(at, sid);
    return at;
  }

  revoke(sid) {
    const s = this.sessions.get(sid);
    if (s) s.live = false;
  }

  /** Rotates rt: the current token rotates; the previous one within "grace" gets the same successor. */
  rotate(rt) {
    for (const s of this.sessions.values()) {
      if (!s.live) continue;
      if (s.rt === rt) {
        s.prev = rt;
        s.rt = this.newRefreshToken(s.sid);
        s.result = { at: this.newAccessToken(s.sid), rt: s.rt };
        return { sid: s.sid, ...s.result };
      }
      if (s.prev === rt && s.result) return { sid: s.sid, ...s.result };
    }
    return null;
  }

  json(status, body, headers = {}) {
    return new Response(body === undefined ? null : JSON.stringify(body), {
      status,
      headers: body === undefined ? headers : { 'Content-Type': 'application/json', ...headers },
    });
  }

  tokenBody(r, withRefresh) {
    const b = { access_token: r.at, token_type: 'Bearer', expires_in: this.expiresIn, session_id: r.sid };
    if (withRefresh) {
      b.refresh_token = r.rt;
      b.refresh_token_expires_at = '2030-01-01T00:00:00Z';
    }
    return b;
  }

  async fetch(input, init = {}) {
    const url = new URL(typeof input === 'string' ? input : input.url);
    const method = (init.method || (typeof input === 'object' && input.method) || 'GET').toUpperCase();
    const headers = new Headers(init.headers || (typeof input === 'object' ? input.headers : undefined));
    // Like a real fetch, sending a Request consumes its body.
    const body = init.body !== undefined ? init.body : input instanceof Request ? await input.text() : undefined;
    const req = { url: url.href, path: url.pathname, method, headers, body, credentials: init.credentials };
    this.requests.push(req);
    this.counts[url.pathname] = (this.counts[url.pathname] || 0) + 1;
    if (this.delay) await new Promise((r) => setTimeout(r, this.delay));
    if (url.origin !== new URL(this.issuer).origin) {
      if (!this.resource) throw new Error('no resource handler');
      return this.resource(req);
    }
    if (this.throwNext) {
      const e = this.throwNext;
      this.throwNext = null;
      throw e;
    }
    return this.route(req, url);
  }

  route(req, url) {
    const p = url.pathname;
    if (p.startsWith('/browser/')) {
      if (req.method !== 'POST') return this.json(405, { error: 'invalid_request' });
      if (req.credentials !== 'include') return this.json(400, { error: 'invalid_grant', error_description: 'no session cookie: sign in first' });
      if (req.headers.get('Content-Type') !== 'application/json') return this.json(415, { error: 'invalid_request', error_description: 'the body must be application/json' });
      const body = JSON.parse(req.body || '{}');
      if (p === '/browser/signin' || p === '/browser/refresh') {
        if (p === '/browser/refresh' && this.failNext) return this.failure();
        const rt = p === '/browser/signin' ? body.refresh_token : this.cookie;
        const r = rt ? this.rotate(rt) : null;
        if (!r) {
          this.cookie = null;
          return this.json(400, { error: 'invalid_grant', error_description: 'the refresh token is not valid' });
        }
        this.cookie = r.rt;
        return this.json(200, this.tokenBody(r, false));
      }
      if (p === '/browser/signout') {
        for (const s of this.sessions.values()) if (s.rt === this.cookie || s.prev === this.cookie) s.live = false;
        this.cookie = null;
        return new Response(null, { status: 204 });
      }
    }
    if (p === '/oauth2/token') {
      if (req.headers.get('Content-Type') !== 'application/x-www-form-urlencoded') return this.json(400, { error: 'invalid_request' });
      if (this.failNext) return this.failure();
      const form = new URLSearchParams(req.body);
      const r = form.get('grant_type') === 'refresh_token' ? this.rotate(form.get('refresh_token')) : null;
      if (!r) return this.json(400, { error: 'invalid_grant', error_description: 'the refresh token is not valid' });
      return this.json(200, this.tokenBody(r, true));
    }
    if (p === '/oauth2/revoke') {
      const form = new URLSearchParams(req.body);
      const t = form.get('token');
      for (const s of this.sessions.values()) if (s.rt === t || s.prev === t) s.live = false;
      return new Response(null, { status: 200 });
    }
    if (p.startsWith('/v1/me/sessions')) {
      const auth = req.headers.get('Authorization') || '';
      const at = auth.startsWith('Bearer ') ? auth.slice(7) : '';
      const sid = this.accessTokens.get(at);
      if (!sid || !this.sessions.get(sid).live) {
        return new Response(JSON.stringify({ title: 'Unauthorized', status: 401, detail: 'the access token is not valid' }), {
          status: 401,
          headers: { 'Content-Type': 'application/problem+json', 'WWW-Authenticate': 'Bearer realm="sessionledger", error="invalid_token", error_description="the access token is not valid"' },
        });
      }
      if (p === '/v1/me/sessions' && req.method === 'GET') {
        const pages = this.pages || [[...this.sessions.values()].filter((s) => s.live).map((s) => s.sid)];
        const i = url.searchParams.has('cursor') ? Number(url.searchParams.get('cursor').slice(1)) : 0;
        const body = {
          sessions: pages[i].map((id) => ({
            session_id: id, client_id: 'web', device: { ip: '127.0.0.1', user_agent: 'test', name: 'n-' + id },
            created_at: '2024-01-01T00:00:00Z', last_active_at: '2024-01-02T00:00:00Z', expires_at: '2024-02-01T00:00:00Z', current: id === sid,
          })),
        };
        if (i + 1 < pages.length) body.next_cursor = 'c' + (i + 1);
        return this.json(200, body);
      }
      if (p === '/v1/me/sessions/revoke-others' && req.method === 'POST') {
        let n = 0;
        for (const s of this.sessions.values()) if (s.live && s.sid !== sid) { s.live = false; n++; }
        return this.json(200, { revoked: n });
      }
      if (req.method === 'DELETE') {
        const id = decodeURIComponent(p.slice('/v1/me/sessions/'.length));
        const s = this.sessions.get(id);
        if (!s || !s.live) return new Response(JSON.stringify({ title: 'Not Found', status: 404, detail: 'no such session' }), { status: 404, headers: { 'Content-Type': 'application/problem+json' } });
        s.live = false;
        return new Response(null, { status: 204 });
      }
    }
    return this.json(404, { error: 'not_found' });
  }

  failure() {
    const f = this.failNext;
    this.failNext = null;
    return this.json(f.status, f.body, f.headers || {});
  }
}
