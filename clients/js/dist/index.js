/**
 * Browser (and Node) client of the sessionledger session service.
 *
 * One {@link SessionClient} per page (or per process) keeps a short-lived
 * access token fresh, shares it with the other tabs of the same origin, and
 * makes sure that only one tab at a time rotates the refresh token.
 *
 * @packageDocumentation
 */
/**
 * A failed call to the ledger. `status` is the HTTP status (0 when no response came: network
 * error); `code` is the OAuth error (`invalid_grant`, `invalid_request`, `invalid_token`, …)
 * when the ledger sent one, or one of the client's own: `'origin_not_allowed'` (status 0: a
 * {@link SessionClient.fetch} to an origin not in {@link SessionClientOptions.apiOrigins}),
 * `'timeout'` (status 0: the ledger did not answer within
 * {@link SessionClientOptions.requestTimeout}).
 * Messages never contain a token.
 */
export class SessionError extends Error {
    /**
     * @param secrets - tokens to remove from the message and description, besides anything
     *   token-shaped (refresh tokens, JWTs, bearer credentials), which is always removed.
     */
    constructor(message, status, code, description, options) {
        const secrets = options && options.secrets ? options.secrets : [];
        super(redact(message, secrets));
        this.name = 'SessionError';
        this.status = status;
        this.code = code === undefined ? undefined : redact(code, secrets);
        this.description = description === undefined ? undefined : redact(description, secrets);
        if (options && 'cause' in options) {
            Object.defineProperty(this, 'cause', { value: options.cause, enumerable: false, writable: true, configurable: true });
        }
    }
}
/** Thrown by {@link SessionClient.fetch} and the self-service calls when there is no session. */
export class SignedOutError extends SessionError {
    constructor(message = 'sessionledger: not signed in') {
        super(message, 0, 'signed_out');
        this.name = 'SignedOutError';
    }
}
const NOT_FREE = Symbol('not free');
/** Removes anything token-like from a message: refresh tokens, JWTs, bearer credentials. */
function redact(s, secrets = []) {
    for (const t of secrets) {
        if (t && t.length >= 8)
            s = s.split(t).join('[redacted]');
    }
    return s
        .replace(/slrt_[A-Za-z0-9_\-.~+/=]*/g, 'slrt_[redacted]')
        .replace(/eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.?[A-Za-z0-9_-]*/g, '[redacted]')
        .replace(/(bearer\s+)[^\s,"']+/gi, '$1[redacted]');
}
function errorMessage(what, status, code, description) {
    let m = `sessionledger: ${what} failed: HTTP ${status}`;
    if (code)
        m += ` ${code}`;
    if (description)
        m += `: ${description.slice(0, 300)}`;
    return m;
}
/** Whether a `WWW-Authenticate` value carries `error="invalid_token"` (RFC 6750 §3.1). */
function isInvalidTokenChallenge(h) {
    return h !== null && /(^|[\s,])error\s*=\s*"?invalid_token"?/i.test(h);
}
function isTok(m) {
    return typeof m.accessToken === 'string' && m.accessToken !== '' && typeof m.expiresAt === 'number' &&
        (m.sessionId === undefined || typeof m.sessionId === 'string');
}
function parseMsg(d) {
    if (typeof d !== 'object' || d === null)
        return null;
    const m = { ...d };
    // A lifetime is optional (older clients do not send it); one that is not a positive number is ignored.
    if (m.lifetime !== undefined && !(typeof m.lifetime === 'number' && Number.isFinite(m.lifetime) && m.lifetime > 0))
        delete m.lifetime;
    switch (m.type) {
        case 'refreshed':
        case 'signed-in':
            return isTok(m) ? m : null;
        case 'signed-out':
            return m.sessionId === undefined || typeof m.sessionId === 'string' ? m : null;
        case 'token?':
            return typeof m.id === 'string' ? m : null;
        case 'token!':
            return typeof m.id === 'string' && isTok(m) ? m : null;
    }
    return null;
}
/**
 * An allowed origin, normalized like the ledger's --browser-origins: exactly scheme://host[:port],
 * lower case, the default port dropped (URL.origin does the rest).
 */
function normalizeOrigin(raw) {
    if (typeof raw !== 'string')
        throw new TypeError('sessionledger: apiOrigins must be strings');
    const s = raw.trim();
    if (s === '*')
        throw new TypeError("sessionledger: apiOrigins: '*' is not supported; list the origins the token may go to");
    let u;
    try {
        u = new URL(s);
    }
    catch {
        throw new TypeError(`sessionledger: apiOrigins: ${JSON.stringify(s)} is not a URL`);
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') {
        throw new TypeError(`sessionledger: apiOrigins: ${JSON.stringify(s)} must be an http or https origin, scheme://host[:port]`);
    }
    if (u.username !== '' || u.password !== '' || u.pathname !== '/' || u.search !== '' || u.hash !== '' || /[?#]/.test(s)) {
        throw new TypeError(`sessionledger: apiOrigins: ${JSON.stringify(s)} must be exactly scheme://host[:port], with no path, query or credentials`);
    }
    return u.origin;
}
/** An AbortSignal that aborts after ms (none when ms is 0, negative or not finite), and how to clear its timer. */
function deadline(ms) {
    const none = { signal: undefined, clear: () => undefined };
    if (!(ms > 0) || !Number.isFinite(ms))
        return none;
    ms = Math.min(ms, 0x7fffffff); // setTimeout's limit: beyond it a timer fires at once
    const AS = typeof AbortSignal === 'function' ? AbortSignal : undefined;
    if (AS && typeof AS.timeout === 'function')
        return { signal: AS.timeout(ms), clear: () => undefined };
    if (typeof AbortController !== 'function')
        return none;
    const ac = new AbortController();
    const timer = setTimeout(() => {
        const reason = typeof DOMException === 'function'
            ? new DOMException('the ledger did not answer in time', 'TimeoutError')
            : Object.assign(new Error('the ledger did not answer in time'), { name: 'TimeoutError' });
        ac.abort(reason);
    }, ms);
    return { signal: ac.signal, clear: () => clearTimeout(timer) };
}
/** p, or a rejection as soon as signal aborts (for a fetch or body that does not honour it). */
function untilAborted(p, signal) {
    return new Promise((resolve, reject) => {
        const onAbort = () => reject(signal.reason ?? new Error('aborted'));
        if (signal.aborted)
            onAbort();
        else
            signal.addEventListener('abort', onAbort, { once: true });
        p.then((v) => { signal.removeEventListener('abort', onAbort); resolve(v); }, (e) => { signal.removeEventListener('abort', onAbort); reject(e); });
    });
}
/** A copy of res with its body already read (text). */
function buffered(res, text) {
    const noBody = res.status === 101 || res.status === 204 || res.status === 205 || res.status === 304;
    try {
        return new Response(noBody ? null : text, { status: res.status, statusText: res.statusText, headers: res.headers });
    }
    catch {
        return res; // a status a Response cannot be made with (an opaque 0); its body is gone, read as none
    }
}
/** The page's location, where there is one (not in Node or a worker without it). */
function pageLocation() {
    const loc = globalThis.location;
    return loc && typeof loc === 'object' ? loc : undefined;
}
/** The origin a fetch input goes to, relative URLs resolved against the page; null if it has none. */
function targetOrigin(input) {
    let raw;
    if (typeof input === 'string')
        raw = input;
    else if (typeof URL === 'function' && input instanceof URL)
        raw = input.href;
    else if (input && typeof input.url === 'string')
        raw = input.url;
    else
        raw = String(input);
    const loc = pageLocation();
    try {
        const u = loc && typeof loc.href === 'string' ? new URL(raw, loc.href) : new URL(raw);
        return u.origin === 'null' ? null : u.origin;
    }
    catch {
        return null;
    }
}
/** The token of a message, with only the fields it has. */
function tokOf(m) {
    const t = { accessToken: m.accessToken, expiresAt: m.expiresAt };
    if (m.sessionId !== undefined)
        t.sessionId = m.sessionId;
    if (m.lifetime !== undefined)
        t.lifetime = m.lifetime;
    return t;
}
function randomId() {
    const c = globalThis.crypto;
    if (c && typeof c.randomUUID === 'function')
        return c.randomUUID();
    return Math.random().toString(36).slice(2) + Math.random().toString(36).slice(2);
}
function memoryStorage() {
    const m = new Map();
    return {
        getItem: (k) => (m.has(k) ? m.get(k) : null),
        setItem: (k, v) => void m.set(k, v),
        removeItem: (k) => void m.delete(k),
    };
}
async function readBody(res) {
    try {
        const text = await res.text();
        return text === '' ? undefined : JSON.parse(text);
    }
    catch {
        return undefined;
    }
}
/** A SessionError from a non-2xx response, reading an OAuth error or a problem+json body. */
async function responseError(what, res, secrets) {
    const body = await readBody(res);
    let code;
    let description;
    if (body && typeof body === 'object') {
        if (typeof body.error === 'string')
            code = body.error;
        if (typeof body.error_description === 'string')
            description = body.error_description;
        else if (typeof body.detail === 'string')
            description = body.detail;
        else if (typeof body.title === 'string')
            description = body.title;
    }
    if (!code && res.status === 401 && isInvalidTokenChallenge(res.headers.get('WWW-Authenticate')))
        code = 'invalid_token';
    return new SessionError(errorMessage(what, res.status, code, description), res.status, code, description, { secrets });
}
class Client {
    constructor(o) {
        this.tok = null;
        /** Bumped whenever the session is replaced or ended; a refresh begun before it is stale. */
        this.epoch = 0;
        this.inflight = null;
        /** The access token of this tab's last forced refresh, and when (this.now()) it began. */
        this.forcedFor = null;
        this.lastForced = null;
        this.listeners = new Set();
        /** Called when this client's token or session changes (waiting refreshes look again). */
        this.waiters = new Set();
        /** Ids of this tab's open token? requests. */
        this.asks = new Set();
        /** Sessions known to have ended: late broadcasts of them are ignored. */
        this.ended = new Set();
        if (!o || typeof o.issuer !== 'string' || o.issuer === '')
            throw new TypeError('sessionledger: issuer is required');
        if (o.mode !== 'cookie' && o.mode !== 'token')
            throw new TypeError("sessionledger: mode must be 'cookie' or 'token'");
        this.issuer = o.issuer.replace(/\/+$/, '');
        this.mode = o.mode;
        this.margin = (o.refreshMargin ?? 30) * 1000;
        this.lockTimeout = o.lockTimeout ?? 5000;
        this.peerTimeout = o.peerTimeout ?? 150;
        this.minForcedInterval = o.minForcedRefreshInterval ?? 5000;
        this.requestTimeout = o.requestTimeout ?? 8000;
        this.storage = o.storage ?? memoryStorage();
        this.storageKey = o.storageKey ?? 'sessionledger:refresh-token:' + this.issuer;
        const f = o.fetch ?? globalThis.fetch;
        if (typeof f !== 'function')
            throw new TypeError('sessionledger: no fetch available; pass options.fetch');
        this.fetchImpl = o.fetch ? o.fetch : f.bind(globalThis);
        if (o.apiOrigins !== undefined) {
            if (!Array.isArray(o.apiOrigins))
                throw new TypeError('sessionledger: apiOrigins must be an array of origins');
            this.apiOrigins = new Set(o.apiOrigins.map(normalizeOrigin));
        }
        else {
            const dflt = new Set();
            const loc = pageLocation();
            if (loc && typeof loc.origin === 'string' && loc.origin !== 'null')
                dflt.add(loc.origin);
            try {
                dflt.add(new URL(this.issuer).origin);
            }
            catch {
                /* an issuer that is not a URL: its requests fail on their own */
            }
            this.apiOrigins = dflt;
        }
        this.now = o.now ?? Date.now;
        // Tabs share a session in cookie mode (one cookie jar) and in token mode with a storage they
        // share (localStorage); with the default memory storage each client has a session of its own.
        const shared = this.mode === 'cookie' || o.storage !== undefined;
        const nav = globalThis.navigator;
        this.locks = o.locks !== undefined ? o.locks
            : shared && nav && nav.locks && typeof nav.locks.request === 'function' ? nav.locks : null;
        this.lockName = 'sessionledger-refresh:' + this.issuer;
        this.channel = null;
        const make = o.broadcastChannel !== undefined ? o.broadcastChannel
            : shared && typeof globalThis.BroadcastChannel === 'function' ? (n) => new globalThis.BroadcastChannel(n) : null;
        if (make) {
            try {
                const ch = make('sessionledger:' + this.issuer);
                ch.onmessage = (ev) => this.onMessage(ev.data);
                this.channel = ch;
            }
            catch {
                this.channel = null;
            }
        }
        this.status = this.mode === 'token' ? (this.storedRefreshToken() ? 'signed-in' : 'signed-out') : 'unknown';
    }
    // --- public API ----------------------------------------------------------
    async signIn(refreshToken) {
        if (typeof refreshToken !== 'string' || refreshToken === '')
            throw new TypeError('sessionledger: signIn needs a refresh token');
        await this.settle();
        await this.withLock(async () => {
            const t0 = this.now();
            let res;
            if (this.mode === 'cookie') {
                res = await this.post('sign-in', '/browser/signin', { refresh_token: refreshToken });
            }
            else {
                this.storage.setItem(this.storageKey, refreshToken);
                res = await this.postForm('sign-in', '/oauth2/token', { grant_type: 'refresh_token', refresh_token: refreshToken });
            }
            if (!res.ok) {
                const err = await responseError('sign-in', res, this.secrets(refreshToken));
                if (res.status === 400 && err.code === 'invalid_grant') {
                    // The ledger cleared the cookie (cookie mode); the stored token was replaced (token mode).
                    if (this.mode === 'token')
                        this.removeStored(refreshToken);
                    this.toSignedOut(this.status === 'signed-in');
                }
                throw err;
            }
            const tok = await this.readTokens('sign-in', res, t0, refreshToken);
            this.epoch++;
            this.status = 'signed-in';
            this.setTok(tok);
            this.broadcast({ type: 'signed-in', ...tok });
            this.emit({ type: 'signed-in', sessionId: tok.sessionId });
        });
    }
    async getAccessToken() {
        const t = this.acceptable(null);
        if (t)
            return t.accessToken;
        if (this.status === 'signed-out' && !(this.mode === 'token' && this.storedRefreshToken()))
            return null;
        const r = await this.refresh(null);
        return r ? r.accessToken : null;
    }
    async fetch(input, init) {
        const origin = targetOrigin(input);
        if (origin === null || !this.apiOrigins.has(origin)) {
            const what = origin === null ? 'the URL has no http(s) origin' : `${origin} is not in apiOrigins`;
            throw new SessionError(`sessionledger: fetch refused: ${what}; the access token goes only to the listed origins`, 0, 'origin_not_allowed', undefined, { secrets: this.secrets() });
        }
        return this.authorized(input, init);
    }
    /**
     * fetch() without the origin check: for the app's calls once checked, and for the self-service
     * calls to the issuer, which pass `what` and so go through send() (its timeout and errors).
     */
    async authorized(input, init, what) {
        const call = (i, ri) => (what !== undefined ? this.send(what, i, ri) : this.fetchImpl(i, ri));
        const token = await this.getAccessToken();
        if (token === null)
            throw new SignedOutError();
        const isRequest = typeof Request === 'function' && input instanceof Request;
        const body = init ? init.body : undefined;
        const streamed = typeof ReadableStream === 'function' && body instanceof ReadableStream;
        const spare = isRequest && !streamed ? input.clone() : input;
        const res = await call(input, this.withBearer(input, init, token));
        if (res.status !== 401 || !isInvalidTokenChallenge(res.headers.get('WWW-Authenticate')) || streamed)
            return res;
        const fresh = await this.replacement(token);
        if (!fresh || fresh.accessToken === token)
            return res;
        try {
            await res.body?.cancel();
        }
        catch {
            /* nothing to release */
        }
        return call(spare, this.withBearer(spare, init, fresh.accessToken));
    }
    /**
     * The token to retry with after the API refused `token` (401 invalid_token), or null to return
     * the 401 as is. A token another tab or caller has replaced meanwhile is simply retried with its
     * successor. Otherwise a forced refresh, at most once per access token and not again within
     * minForcedRefreshInterval of the last one in this tab: an API that refuses every token (a skewed
     * clock, another audience) must not make the client rotate on every call.
     */
    async replacement(token) {
        const cur = this.tok;
        if (!cur)
            return null; // signed out meanwhile
        if (cur.accessToken !== token) {
            const t = this.acceptable(token);
            if (t || this.status === 'signed-out')
                return t;
            return this.refresh(token); // the successor has expired too: an ordinary refresh
        }
        if (this.forcedFor === token) {
            // A forced refresh for this token is under way (join it) or has failed (no second one).
            const inf = this.inflight;
            return inf && inf.rejected === token ? inf.promise : null;
        }
        const now = this.now();
        if (this.lastForced !== null && now - this.lastForced < this.minForcedInterval)
            return null;
        this.forcedFor = token;
        this.lastForced = now;
        this.invalidate(token);
        return this.refresh(token);
    }
    async signOut() {
        await this.settle();
        await this.withLock(async () => {
            if (this.mode === 'cookie') {
                const res = await this.post('sign-out', '/browser/signout', {});
                if (!res.ok)
                    throw await responseError('sign-out', res, this.secrets());
            }
            else {
                const rt = this.storedRefreshToken();
                if (rt) {
                    const res = await this.postForm('sign-out', '/oauth2/revoke', { token: rt });
                    if (!res.ok)
                        throw await responseError('sign-out', res, this.secrets());
                    this.removeStored(rt);
                }
            }
            this.toSignedOut(true, true);
        });
    }
    onChange(cb) {
        const wrapped = (e) => cb(e);
        this.listeners.add(wrapped);
        return () => void this.listeners.delete(wrapped);
    }
    async listSessions() {
        const out = [];
        let cursor;
        const seen = new Set();
        for (;;) {
            const url = this.issuer + '/v1/me/sessions' + (cursor ? '?cursor=' + encodeURIComponent(cursor) : '');
            const res = await this.authorized(url, { method: 'GET', credentials: 'omit', headers: { Accept: 'application/json' } }, 'list sessions');
            if (!res.ok)
                throw await this.selfServiceError('list sessions', res);
            const body = await readBody(res);
            if (!body || !Array.isArray(body.sessions))
                throw new SessionError('sessionledger: list sessions failed: the answer has no sessions', res.status, 'invalid_response');
            for (const s of body.sessions)
                out.push(toSessionInfo(s));
            if (typeof body.next_cursor !== 'string' || body.next_cursor === '')
                return out;
            if (seen.has(body.next_cursor))
                throw new SessionError('sessionledger: list sessions failed: the ledger repeated a cursor', res.status, 'invalid_response');
            seen.add(body.next_cursor);
            cursor = body.next_cursor;
        }
    }
    async revokeSession(id) {
        if (typeof id !== 'string' || id === '')
            throw new TypeError('sessionledger: revokeSession needs a session id');
        const res = await this.authorized(this.issuer + '/v1/me/sessions/' + encodeURIComponent(id), { method: 'DELETE', credentials: 'omit' }, 'revoke session');
        if (!res.ok)
            throw await this.selfServiceError('revoke session', res);
        if (id !== this.sid)
            return;
        // The current session: a sign-out, here and in the other tabs.
        if (this.mode === 'token') {
            const rt = this.storedRefreshToken();
            if (rt)
                this.removeStored(rt);
        }
        this.toSignedOut(true, true);
        if (this.mode === 'cookie') {
            // The ledger's cookie still holds the dead session's refresh token: have it cleared. Under the
            // refresh lock, and not if a sign-in (here or in another tab) has come since: signout ends
            // whatever session the cookie holds.
            const epoch = this.epoch;
            try {
                await this.withLock(async () => {
                    if (this.epoch !== epoch)
                        return;
                    await this.post('sign-out', '/browser/signout', {});
                });
            }
            catch {
                /* best effort: a refresh with the dead token is refused, and the ledger clears the cookie then */
            }
        }
    }
    async signOutOtherDevices() {
        const res = await this.authorized(this.issuer + '/v1/me/sessions/revoke-others', { method: 'POST', credentials: 'omit' }, 'sign out other devices');
        if (!res.ok)
            throw await this.selfServiceError('sign out other devices', res);
        const body = await readBody(res);
        if (!body || typeof body.revoked !== 'number')
            throw new SessionError('sessionledger: sign out other devices failed: the answer has no count', res.status, 'invalid_response');
        return body.revoked;
    }
    /** The error of a failed self-service call: SignedOutError if its retry found the session over. */
    async selfServiceError(what, res) {
        if (res.status === 401 && this.status === 'signed-out') {
            await readBody(res);
            return new SignedOutError(`sessionledger: ${what} failed: the session is over`);
        }
        return responseError(what, res, this.secrets());
    }
    close() {
        const ch = this.channel;
        this.channel = null;
        if (ch) {
            ch.onmessage = null;
            ch.close();
        }
    }
    // --- state ---------------------------------------------------------------
    /**
     * The current token if it is fresh and is not `rejected`. Fresh: its remaining life is at least
     * min(margin, half its lifetime), so that a token shorter-lived than the margin (a short
     * access_token_ttl, a session's last seconds) is not refreshed on every call.
     */
    acceptable(rejected) {
        const t = this.tok;
        if (!t || (rejected !== null && t.accessToken === rejected))
            return null;
        const left = t.expiresAt - this.now();
        const margin = t.lifetime !== undefined ? Math.min(this.margin, t.lifetime / 2) : this.margin;
        return left > 0 && left >= margin ? t : null;
    }
    setTok(t) {
        this.tok = t;
        if (t.sessionId)
            this.sid = t.sessionId;
        for (const w of [...this.waiters])
            w();
    }
    /** Marks a token the server refused as unusable. */
    invalidate(token) {
        if (this.tok && this.tok.accessToken === token)
            this.tok = { ...this.tok, expiresAt: -Infinity };
    }
    /** Clears the session. `broadcast`: tell the other tabs; `always`: even if this tab knew no session. */
    toSignedOut(broadcast, always = false) {
        const was = this.status;
        const sid = this.sid;
        this.tok = null;
        this.sid = undefined;
        this.status = 'signed-out';
        this.epoch++;
        if (sid)
            this.ended.add(sid);
        for (const w of [...this.waiters])
            w();
        if (broadcast && (always || was === 'signed-in'))
            this.broadcast(sid ? { type: 'signed-out', sessionId: sid } : { type: 'signed-out' });
        if (was === 'signed-in')
            this.emit(sid ? { type: 'signed-out', sessionId: sid } : { type: 'signed-out' });
    }
    emit(e) {
        for (const l of [...this.listeners]) {
            try {
                l({ ...e });
            }
            catch (err) {
                const report = globalThis.reportError;
                if (typeof report === 'function')
                    report(err);
                else
                    console.error(err);
            }
        }
    }
    /** The tokens this client knows, which no error message may contain. */
    secrets(...extra) {
        return [...extra, this.tok ? this.tok.accessToken : null, this.mode === 'token' ? this.storedRefreshToken() : null];
    }
    storedRefreshToken() {
        try {
            return this.storage.getItem(this.storageKey);
        }
        catch {
            return null;
        }
    }
    /** Removes the stored refresh token if it is still `rt` (another tab may have replaced it). */
    removeStored(rt) {
        if (this.storedRefreshToken() === rt)
            this.storage.removeItem(this.storageKey);
    }
    /** Waits for this tab's refresh in flight, if any, ignoring its outcome. */
    async settle() {
        const cur = this.inflight;
        if (cur)
            await cur.promise.then(() => undefined, () => undefined);
    }
    // --- other tabs ----------------------------------------------------------
    broadcast(m) {
        const ch = this.channel;
        if (!ch)
            return;
        try {
            ch.postMessage(m);
        }
        catch {
            /* a closed channel: the other tabs find out on their own */
        }
    }
    onMessage(data) {
        const m = parseMsg(data);
        if (!m)
            return;
        switch (m.type) {
            case 'token?': {
                const t = this.acceptable(null);
                if (t)
                    this.broadcast({ type: 'token!', id: m.id, ...t });
                return;
            }
            case 'token!':
                if (this.asks.has(m.id))
                    this.adopt(m, 'refreshed');
                return;
            case 'refreshed':
                this.adopt(m, 'refreshed');
                return;
            case 'signed-in': {
                if (m.sessionId && this.ended.has(m.sessionId))
                    return;
                this.epoch++;
                this.status = 'signed-in';
                this.setTok(tokOf(m));
                this.emit({ type: 'signed-in', sessionId: m.sessionId });
                return;
            }
            case 'signed-out':
                if (m.sessionId && this.sid && m.sessionId !== this.sid)
                    return; // about an older session
                if (m.sessionId)
                    this.ended.add(m.sessionId);
                if (this.status !== 'signed-out')
                    this.toSignedOut(false);
                return;
        }
    }
    /** Takes a peer's token if it is newer than this tab's. */
    adopt(m, type) {
        if (m.sessionId && this.ended.has(m.sessionId))
            return;
        const cur = this.tok;
        if (cur && (cur.accessToken === m.accessToken || cur.expiresAt > m.expiresAt))
            return;
        if (m.expiresAt <= this.now())
            return;
        this.status = 'signed-in';
        this.setTok(tokOf(m));
        this.emit({ type, sessionId: m.sessionId });
    }
    /** Asks the other tabs for a token valid ≥ margin; waits up to peerTimeout. */
    askPeers(rejected, epoch) {
        if (!this.channel)
            return Promise.resolve(null);
        const id = randomId();
        return new Promise((resolve) => {
            const check = () => {
                const t = this.acceptable(rejected);
                if (t || this.epoch !== epoch)
                    done(t);
            };
            const done = (t) => {
                clearTimeout(timer);
                this.waiters.delete(check);
                this.asks.delete(id);
                resolve(t);
            };
            const timer = setTimeout(() => done(null), this.peerTimeout);
            this.waiters.add(check);
            this.asks.add(id);
            this.broadcast({ type: 'token?', id });
        });
    }
    // --- refresh -------------------------------------------------------------
    /** One refresh per tab at a time; `rejected`: a token the server refused, which must not satisfy it. */
    refresh(rejected) {
        const cur = this.inflight;
        if (cur) {
            if (rejected === null || cur.rejected === rejected)
                return cur.promise;
            return cur.promise.then(() => undefined, () => undefined).then(() => this.acceptable(rejected) ?? this.refresh(rejected));
        }
        const p = this.flow(rejected).finally(() => {
            if (this.inflight && this.inflight.promise === p)
                this.inflight = null;
        });
        this.inflight = { promise: p, rejected };
        return p;
    }
    /** The cross-tab refresh: lock if free; else wait (bounded) for it and look for the holder's token. */
    async flow(rejected) {
        const epoch = this.epoch;
        const locks = this.locks;
        if (!locks)
            return this.attempt(rejected, epoch, this.tok === null);
        let granted = false;
        let first;
        try {
            first = await locks.request(this.lockName, { ifAvailable: true }, (lock) => {
                granted = true;
                if (!lock)
                    return NOT_FREE;
                return this.attempt(rejected, epoch, this.tok === null);
            });
        }
        catch (e) {
            if (granted)
                throw e;
            return this.attempt(rejected, epoch, this.tok === null); // no usable lock manager here
        }
        if (first !== NOT_FREE)
            return first;
        // Another tab is refreshing: wait for its lock, then its token will usually be here.
        // Holding it, ask the peers (its broadcast may not be here yet); after a timeout (an orphaned
        // lock) go straight to the ledger unless this tab has no token at all.
        return this.withLock((locked) => this.attempt(rejected, epoch, locked || this.tok === null));
    }
    /**
     * Runs fn holding the refresh lock, waiting at most lockTimeout for it; after that (an orphaned
     * lock) runs it without the lock, which the ledger's reuse grace window makes safe.
     */
    async withLock(fn) {
        const locks = this.locks;
        if (!locks)
            return fn(false);
        const ac = new AbortController();
        const timer = setTimeout(() => ac.abort(), this.lockTimeout);
        let granted = false;
        try {
            return await locks.request(this.lockName, { signal: ac.signal }, () => {
                granted = true;
                clearTimeout(timer);
                return fn(true);
            });
        }
        catch (e) {
            if (granted)
                throw e;
            return fn(false);
        }
        finally {
            clearTimeout(timer);
        }
    }
    /** A token from this tab, from a peer, or from the ledger, in that order. */
    async attempt(rejected, epoch, askPeers) {
        const have = this.acceptable(rejected);
        if (have || this.epoch !== epoch)
            return have;
        if (askPeers) {
            const t = await this.askPeers(rejected, epoch);
            if (t || this.epoch !== epoch)
                return t ?? this.acceptable(rejected);
        }
        return this.serverRefresh(rejected, epoch);
    }
    async serverRefresh(rejected, epoch) {
        if (this.mode === 'cookie') {
            const t0 = this.now();
            const res = await this.post('refresh', '/browser/refresh', {});
            if (res.ok)
                return this.refreshed(await this.readTokens('refresh', res, t0), rejected, epoch);
            const err = await responseError('refresh', res, this.secrets());
            if (res.status === 400 && err.code === 'invalid_grant') {
                if (this.epoch !== epoch)
                    return this.acceptable(rejected);
                this.toSignedOut(true);
                return null;
            }
            throw err;
        }
        // Token mode; a second round when another tab replaced the stored token meanwhile.
        for (let round = 0;; round++) {
            const rt = this.storedRefreshToken();
            if (!rt) {
                if (this.epoch === epoch)
                    this.toSignedOut(false);
                return this.acceptable(rejected);
            }
            const t0 = this.now();
            const res = await this.postForm('refresh', '/oauth2/token', { grant_type: 'refresh_token', refresh_token: rt });
            if (res.ok)
                return this.refreshed(await this.readTokens('refresh', res, t0, rt), rejected, epoch);
            const err = await responseError('refresh', res, this.secrets(rt));
            if (res.status !== 400 || err.code !== 'invalid_grant')
                throw err;
            if (this.epoch !== epoch)
                return this.acceptable(rejected);
            const now = this.storedRefreshToken();
            if (now && now !== rt && round === 0)
                continue;
            this.removeStored(rt);
            this.toSignedOut(true);
            return null;
        }
    }
    /** Records tokens this tab got from the ledger and tells the other tabs. */
    refreshed(tok, rejected, epoch) {
        if (this.epoch !== epoch)
            return this.acceptable(rejected); // signed out or in anew meanwhile
        if (tok.sessionId && this.ended.has(tok.sessionId))
            return null;
        this.status = 'signed-in';
        this.setTok(tok);
        this.broadcast({ type: 'refreshed', ...tok });
        this.emit({ type: 'refreshed', sessionId: tok.sessionId });
        return tok;
    }
    /** Reads a token response; in token mode stores the new refresh token in place of `sent`. */
    async readTokens(what, res, t0, sent) {
        const b = await readBody(res);
        if (!b || typeof b.access_token !== 'string' || b.access_token === '' || typeof b.expires_in !== 'number') {
            throw new SessionError(`sessionledger: ${what} failed: the answer has no access token`, res.status, 'invalid_response');
        }
        if (this.mode === 'token') {
            if (typeof b.refresh_token !== 'string' || b.refresh_token === '') {
                throw new SessionError(`sessionledger: ${what} failed: the answer has no refresh token`, res.status, 'invalid_response');
            }
            // Written before any broadcast; not over a token another tab put there meanwhile.
            if (sent === undefined || this.storedRefreshToken() === sent)
                this.storage.setItem(this.storageKey, b.refresh_token);
        }
        const tok = { accessToken: b.access_token, expiresAt: t0 + b.expires_in * 1000, lifetime: b.expires_in * 1000 };
        if (typeof b.session_id === 'string' && b.session_id !== '')
            tok.sessionId = b.session_id;
        return tok;
    }
    // --- HTTP ------------------------------------------------------------------
    /** A cookie-mode POST: JSON (the ledger's CSRF defence) with credentials. */
    async post(what, path, body) {
        return this.send(what, this.issuer + path, {
            method: 'POST',
            credentials: 'include',
            cache: 'no-store',
            headers: { 'Content-Type': 'application/json' },
            body: JSON.stringify(body),
        });
    }
    /** A token-mode POST: a form, no cookies. */
    async postForm(what, path, form) {
        return this.send(what, this.issuer + path, {
            method: 'POST',
            credentials: 'omit',
            cache: 'no-store',
            headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
            body: new URLSearchParams(form).toString(),
        });
    }
    /**
     * A request to the ledger, answer and body within requestTimeout. The body is read here (the
     * Response returned is a buffered copy), so a ledger that stalls mid-body cannot hang the caller
     * or the refresh lock either. The wait ends at the deadline even if the fetch ignores the signal.
     */
    async send(what, url, init) {
        const d = deadline(this.requestTimeout);
        try {
            const signal = d.signal;
            if (!signal)
                return await this.fetchImpl(url, init);
            const res = await untilAborted(this.fetchImpl(url, { ...init, signal }), signal);
            let text = '';
            try {
                text = await untilAborted(res.text(), signal);
            }
            catch (e) {
                if (signal.aborted)
                    throw e;
                /* an unreadable body: treated as none, as readBody would */
            }
            return buffered(res, text);
        }
        catch (e) {
            if (d.signal && d.signal.aborted) {
                throw new SessionError(`sessionledger: ${what} failed: no answer from the ledger within ${this.requestTimeout} ms`, 0, 'timeout', undefined, { cause: e });
            }
            const name = e && typeof e === 'object' && typeof e.name === 'string' ? e.name : 'Error';
            throw new SessionError(`sessionledger: ${what} failed: no answer from the ledger (${name})`, 0, undefined, undefined, { cause: e });
        }
        finally {
            d.clear();
        }
    }
    withBearer(input, init, token) {
        const isRequest = typeof Request === 'function' && input instanceof Request;
        const headers = new Headers(init && init.headers !== undefined ? init.headers : isRequest ? input.headers : undefined);
        headers.set('Authorization', 'Bearer ' + token);
        return { ...init, headers };
    }
}
function toSessionInfo(s) {
    const d = s && typeof s.device === 'object' && s.device !== null ? s.device : {};
    const device = {};
    if (typeof d.ip === 'string')
        device.ip = d.ip;
    if (typeof d.user_agent === 'string')
        device.userAgent = d.user_agent;
    if (typeof d.name === 'string')
        device.name = d.name;
    return {
        sessionId: String(s.session_id ?? ''),
        clientId: String(s.client_id ?? ''),
        device,
        createdAt: String(s.created_at ?? ''),
        lastActiveAt: String(s.last_active_at ?? ''),
        expiresAt: String(s.expires_at ?? ''),
        current: s.current === true,
    };
}
/** Creates a {@link SessionClient}. See {@link SessionClientOptions}. */
export function createSessionClient(opts) {
    return new Client(opts);
}
