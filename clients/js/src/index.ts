/**
 * Browser (and Node) client of the sessionledger session service.
 *
 * One {@link SessionClient} per page (or per process) keeps a short-lived
 * access token fresh, shares it with the other tabs of the same origin, and
 * makes sure that only one tab at a time rotates the refresh token.
 *
 * @packageDocumentation
 */

/** A change of this client's session, in this tab or in another tab of the same origin and issuer. */
export type SessionEvent = { type: 'signed-in' | 'refreshed' | 'signed-out'; sessionId?: string };

/** The minimal storage the client needs in token mode (`localStorage` and `sessionStorage` fit). */
export interface SessionStorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** The part of the Web Locks API (`navigator.locks`) the client uses. */
export interface LockManagerLike {
  request<T>(
    name: string,
    options: { ifAvailable?: boolean; signal?: AbortSignal },
    callback: (lock: unknown | null) => T | PromiseLike<T>,
  ): Promise<T>;
}

/** The part of `BroadcastChannel` the client uses. */
export interface BroadcastChannelLike {
  postMessage(message: unknown): void;
  close(): void;
  onmessage: ((this: any, ev: MessageEvent) => any) | null;
}

/** Options of {@link createSessionClient}. */
export interface SessionClientOptions {
  /** The ledger's base URL, e.g. `https://auth.example.com`; a trailing slash is tolerated. */
  issuer: string;
  /**
   * `'cookie'`: the refresh token lives only in the ledger's httpOnly cookie (browser apps).
   * `'token'`: the client keeps the refresh token itself, in {@link SessionClientOptions.storage}.
   */
  mode: 'cookie' | 'token';
  /**
   * Seconds: {@link SessionClient.getAccessToken} returns a token valid for at least this long,
   * or for at least half its lifetime (its `expires_in` when minted) if that is shorter. Default 30.
   */
  refreshMargin?: number;
  /**
   * Milliseconds: the longest a tab waits for another tab's refresh lock before it refreshes
   * without the lock (an orphaned lock must not hang a tab). Default 5000; keep it well under
   * the ledger's reuse grace window (10 s by default).
   */
  lockTimeout?: number;
  /** Milliseconds a tab waits for another tab to answer a request for its token. Default 150. */
  peerTimeout?: number;
  /**
   * Milliseconds: the longest the client waits for the ledger to answer one of its own requests
   * (sign-in, refresh, sign-out, revoke, the self-service calls), body included. A request that
   * takes longer is aborted and throws a {@link SessionError} with status 0 and code `'timeout'`;
   * the session is kept and the refresh lock released. Default 8000; keep it under the ledger's
   * `--reuse-grace` (10 s by default), so that a retry after a timeout still gets the successor of
   * a rotation the ledger made. `0` turns it off. It is not applied to the app's own
   * {@link SessionClient.fetch} calls (pass a `signal` there).
   */
  requestTimeout?: number;
  /**
   * Milliseconds: after a forced refresh (the one {@link SessionClient.fetch} makes on a 401
   * `invalid_token`), no other forced refresh in this tab for this long; meanwhile such a 401 is
   * returned as is. Default 5000. Whatever it is, a forced refresh happens at most once per access
   * token. An API that refuses every token (a skewed clock, another audience) so costs at most one
   * rotation per interval, not one per call.
   */
  minForcedRefreshInterval?: number;
  /**
   * Token mode: where the refresh token is kept. Default: in memory, for this client only, and
   * then the client does not coordinate with other tabs (each has its own session). Pass a
   * storage the tabs share (`localStorage`) to share one session across tabs.
   */
  storage?: SessionStorageLike;
  /** Token mode: the storage key of the refresh token. Default `'sessionledger:refresh-token:' + issuer`. */
  storageKey?: string;
  /**
   * The origins {@link SessionClient.fetch} may send the access token to, each `scheme://host[:port]`
   * (normalized like the ledger's `--browser-origins`: lower case, default port dropped, a trailing
   * `/` tolerated; a path, query or credentials are refused, and so is `'*'`). A request to any
   * other origin throws a {@link SessionError} with code `'origin_not_allowed'` and sends nothing.
   * Relative URLs are resolved against `location.href` where there is one.
   *
   * Default: the page's own origin (`location.origin`, where defined) and the issuer's origin.
   * Listing origins replaces that default (list the page's and the issuer's too if `fetch` should
   * reach them); the self-service calls ({@link SessionClient.listSessions}, …) always reach the
   * issuer. Peers do the same: Auth0's `allowedList`, MSAL's `protectedResourceMap`.
   */
  apiOrigins?: string[];
  /** The `fetch` to use (tests, non-browser runtimes). Default: the global `fetch`. */
  fetch?: typeof fetch;
  /** A clock in epoch milliseconds (tests). Default `Date.now`. */
  now?: () => number;
  /**
   * The Web Locks manager. Default `navigator.locks` where it exists (in token mode only when
   * `storage` is given); `null` turns cross-tab locking off.
   */
  locks?: LockManagerLike | null;
  /**
   * Makes the channel shared with other tabs. Default: `new BroadcastChannel(name)` where it
   * exists (in token mode only when `storage` is given); `null` turns cross-tab sharing off.
   */
  broadcastChannel?: ((name: string) => BroadcastChannelLike) | null;
}

/** One of the signed-in user's sessions, as {@link SessionClient.listSessions} returns it. */
export interface SessionInfo {
  sessionId: string;
  clientId: string;
  device: { ip?: string; userAgent?: string; name?: string };
  /** RFC 3339 times, as the ledger sends them. */
  createdAt: string;
  lastActiveAt: string;
  expiresAt: string;
  /** Whether this is the session of the access token that asked. */
  current: boolean;
}

/** The client returned by {@link createSessionClient}. */
export interface SessionClient {
  /**
   * Signs in with a session's first refresh token, handed over by the app's backend. Cookie
   * mode: `POST /browser/signin` (the ledger sets the refresh cookie). Token mode: stores the
   * token and refreshes at once, so the handed-over token is rotated out. Fires `'signed-in'`
   * here and in the other tabs. A refused token (`invalid_grant`) leaves the client signed out
   * and throws.
   */
  signIn(refreshToken: string): Promise<void>;
  /**
   * An access token valid for at least `refreshMargin` seconds (or half its lifetime, if that is
   * shorter: a token that lives less than the margin), refreshed silently (once for all
   * concurrent callers and all tabs), or `null` when signed out. Throws {@link SessionError} when
   * the refresh failed for another reason (network, 429, 5xx, a refused Origin): the session
   * may still be good, so the caller may retry.
   */
  getAccessToken(): Promise<string | null>;
  /**
   * `fetch` with `Authorization: Bearer <access token>`, for URLs of the origins in
   * {@link SessionClientOptions.apiOrigins} only: to any other it throws a {@link SessionError}
   * (status 0, code `'origin_not_allowed'`) and sends nothing. On a 401 whose `WWW-Authenticate` has
   * `error="invalid_token"` it retries once: with the current token if the refused one was
   * replaced meanwhile, else after a forced refresh (even if the token looks unexpired). A forced
   * refresh happens at most once per access token and not within
   * {@link SessionClientOptions.minForcedRefreshInterval} of the last one in this tab; when none is
   * allowed, or it finds the session over, the 401 is returned. Throws
   * {@link SignedOutError} without sending anything when there is no session at all. A request
   * whose body is a stream is not retried (the stream cannot be sent twice).
   */
  fetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response>;
  /**
   * Signs out: revokes the session at the ledger (cookie mode `POST /browser/signout`, token mode
   * `POST /oauth2/revoke`), clears this client's state and tells the other tabs. If the ledger
   * cannot be reached it throws and keeps the state, so the caller can retry.
   */
  signOut(): Promise<void>;
  /** Calls `cb` for every {@link SessionEvent}; returns a function that unsubscribes. */
  onChange(cb: (e: SessionEvent) => void): () => void;
  /**
   * The user's live sessions (`GET /v1/me/sessions`, every page). Like the other self-service
   * calls it goes through {@link SessionClient.fetch} (one forced refresh on `invalid_token`) and
   * throws {@link SignedOutError} when there is no session or the session turns out to be over.
   */
  listSessions(): Promise<SessionInfo[]>;
  /**
   * Ends one of the user's sessions (`DELETE /v1/me/sessions/{id}`; a 404 throws). Ending the
   * current one is a sign-out: the state is cleared, `'signed-out'` fires once and the other tabs
   * are told. In token mode the stored refresh token is removed; in cookie mode the client then
   * also calls `POST /browser/signout` so that the ledger clears its cookie (a failure of that is
   * ignored).
   */
  revokeSession(id: string): Promise<void>;
  /** Ends every session of the user but this one; returns how many were ended. */
  signOutOtherDevices(): Promise<number>;
  /** Closes the channel to the other tabs. The client keeps working on its own. */
  close(): void;
}

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
  /** HTTP status, or 0 when there was no response. */
  readonly status: number;
  /** The OAuth error code, when the ledger sent one. */
  readonly code: string | undefined;
  /** The ledger's description (with anything token-like removed). */
  readonly description: string | undefined;

  /**
   * @param secrets - tokens to remove from the message and description, besides anything
   *   token-shaped (refresh tokens, JWTs, bearer credentials), which is always removed.
   */
  constructor(message: string, status: number, code?: string, description?: string, options?: { cause?: unknown; secrets?: readonly (string | null | undefined)[] }) {
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

// ---------------------------------------------------------------------------

/** `lifetime`: ms, the token's `expires_in` when minted; absent when a peer did not send it. */
type Tok = { accessToken: string; expiresAt: number; sessionId?: string; lifetime?: number };
type Status = 'unknown' | 'signed-in' | 'signed-out';
type Msg =
  | { type: 'refreshed' | 'signed-in'; accessToken: string; expiresAt: number; sessionId?: string; lifetime?: number }
  | { type: 'signed-out'; sessionId?: string }
  | { type: 'token?'; id: string }
  | { type: 'token!'; id: string; accessToken: string; expiresAt: number; sessionId?: string; lifetime?: number };

const NOT_FREE: unique symbol = Symbol('not free');

/** Removes anything token-like from a message: refresh tokens, JWTs, bearer credentials. */
function redact(s: string, secrets: readonly (string | null | undefined)[] = []): string {
  for (const t of secrets) {
    if (t && t.length >= 8) s = s.split(t).join('[redacted]');
  }
  return s
    .replace(/slrt_[A-Za-z0-9_\-.~+/=]*/g, 'slrt_[redacted]')
    .replace(/eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.?[A-Za-z0-9_-]*/g, '[redacted]')
    .replace(/(bearer\s+)[^\s,"']+/gi, '$1[redacted]');
}

function errorMessage(what: string, status: number, code?: string, description?: string): string {
  let m = `sessionledger: ${what} failed: HTTP ${status}`;
  if (code) m += ` ${code}`;
  if (description) m += `: ${description.slice(0, 300)}`;
  return m;
}

/** Whether a `WWW-Authenticate` value carries `error="invalid_token"` (RFC 6750 §3.1). */
function isInvalidTokenChallenge(h: string | null): boolean {
  return h !== null && /(^|[\s,])error\s*=\s*"?invalid_token"?/i.test(h);
}

function isTok(m: any): boolean {
  return typeof m.accessToken === 'string' && m.accessToken !== '' && typeof m.expiresAt === 'number' &&
    (m.sessionId === undefined || typeof m.sessionId === 'string');
}

function parseMsg(d: unknown): Msg | null {
  if (typeof d !== 'object' || d === null) return null;
  const m = { ...(d as any) };
  // A lifetime is optional (older clients do not send it); one that is not a positive number is ignored.
  if (m.lifetime !== undefined && !(typeof m.lifetime === 'number' && Number.isFinite(m.lifetime) && m.lifetime > 0)) delete m.lifetime;
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
function normalizeOrigin(raw: unknown): string {
  if (typeof raw !== 'string') throw new TypeError('sessionledger: apiOrigins must be strings');
  const s = raw.trim();
  if (s === '*') throw new TypeError("sessionledger: apiOrigins: '*' is not supported; list the origins the token may go to");
  let u: URL;
  try {
    u = new URL(s);
  } catch {
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
function deadline(ms: number): { signal: AbortSignal | undefined; clear: () => void } {
  const none = { signal: undefined, clear: () => undefined };
  if (!(ms > 0) || !Number.isFinite(ms)) return none;
  ms = Math.min(ms, 0x7fffffff); // setTimeout's limit: beyond it a timer fires at once
  const AS: any = typeof AbortSignal === 'function' ? AbortSignal : undefined;
  if (AS && typeof AS.timeout === 'function') return { signal: AS.timeout(ms), clear: () => undefined };
  if (typeof AbortController !== 'function') return none;
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
function untilAborted<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason ?? new Error('aborted'));
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => { signal.removeEventListener('abort', onAbort); resolve(v); },
      (e) => { signal.removeEventListener('abort', onAbort); reject(e); },
    );
  });
}

/** A copy of res with its body already read (text). */
function buffered(res: Response, text: string): Response {
  const noBody = res.status === 101 || res.status === 204 || res.status === 205 || res.status === 304;
  try {
    return new Response(noBody ? null : text, { status: res.status, statusText: res.statusText, headers: res.headers });
  } catch {
    return res; // a status a Response cannot be made with (an opaque 0); its body is gone, read as none
  }
}

/** The page's location, where there is one (not in Node or a worker without it). */
function pageLocation(): { origin?: unknown; href?: unknown } | undefined {
  const loc = (globalThis as any).location;
  return loc && typeof loc === 'object' ? loc : undefined;
}

/** The origin a fetch input goes to, relative URLs resolved against the page; null if it has none. */
function targetOrigin(input: RequestInfo | URL): string | null {
  let raw: string;
  if (typeof input === 'string') raw = input;
  else if (typeof URL === 'function' && input instanceof URL) raw = input.href;
  else if (input && typeof (input as any).url === 'string') raw = (input as any).url;
  else raw = String(input);
  const loc = pageLocation();
  try {
    const u = loc && typeof loc.href === 'string' ? new URL(raw, loc.href) : new URL(raw);
    return u.origin === 'null' ? null : u.origin;
  } catch {
    return null;
  }
}

/** The token of a message, with only the fields it has. */
function tokOf(m: Tok): Tok {
  const t: Tok = { accessToken: m.accessToken, expiresAt: m.expiresAt };
  if (m.sessionId !== undefined) t.sessionId = m.sessionId;
  if (m.lifetime !== undefined) t.lifetime = m.lifetime;
  return t;
}

function randomId(): string {
  const c = (globalThis as any).crypto;
  if (c && typeof c.randomUUID === 'function') return c.randomUUID();
  return Math.random().toString(36).slice(2) + Math.random().toString(36).slice(2);
}

function memoryStorage(): SessionStorageLike {
  const m = new Map<string, string>();
  return {
    getItem: (k) => (m.has(k) ? (m.get(k) as string) : null),
    setItem: (k, v) => void m.set(k, v),
    removeItem: (k) => void m.delete(k),
  };
}

async function readBody(res: Response): Promise<any> {
  try {
    const text = await res.text();
    return text === '' ? undefined : JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** A SessionError from a non-2xx response, reading an OAuth error or a problem+json body. */
async function responseError(what: string, res: Response, secrets: readonly (string | null | undefined)[]): Promise<SessionError> {
  const body = await readBody(res);
  let code: string | undefined;
  let description: string | undefined;
  if (body && typeof body === 'object') {
    if (typeof body.error === 'string') code = body.error;
    if (typeof body.error_description === 'string') description = body.error_description;
    else if (typeof body.detail === 'string') description = body.detail;
    else if (typeof body.title === 'string') description = body.title;
  }
  if (!code && res.status === 401 && isInvalidTokenChallenge(res.headers.get('WWW-Authenticate'))) code = 'invalid_token';
  return new SessionError(errorMessage(what, res.status, code, description), res.status, code, description, { secrets });
}

class Client implements SessionClient {
  private readonly issuer: string;
  private readonly mode: 'cookie' | 'token';
  private readonly margin: number;
  private readonly lockTimeout: number;
  private readonly peerTimeout: number;
  private readonly minForcedInterval: number;
  private readonly requestTimeout: number;
  private readonly storage: SessionStorageLike;
  private readonly storageKey: string;
  private readonly fetchImpl: typeof fetch;
  /** The normalized origins fetch() may send the access token to. */
  private readonly apiOrigins: ReadonlySet<string>;
  private readonly now: () => number;
  private readonly locks: LockManagerLike | null;
  private readonly lockName: string;
  private channel: BroadcastChannelLike | null;

  private tok: Tok | null = null;
  private sid: string | undefined;
  private status: Status;
  /** Bumped whenever the session is replaced or ended; a refresh begun before it is stale. */
  private epoch = 0;
  private inflight: { promise: Promise<Tok | null>; rejected: string | null } | null = null;
  /** The access token of this tab's last forced refresh, and when (this.now()) it began. */
  private forcedFor: string | null = null;
  private lastForced: number | null = null;
  private readonly listeners = new Set<(e: SessionEvent) => void>();
  /** Called when this client's token or session changes (waiting refreshes look again). */
  private readonly waiters = new Set<() => void>();
  /** Ids of this tab's open token? requests. */
  private readonly asks = new Set<string>();
  /** Sessions known to have ended: late broadcasts of them are ignored. */
  private readonly ended = new Set<string>();

  constructor(o: SessionClientOptions) {
    if (!o || typeof o.issuer !== 'string' || o.issuer === '') throw new TypeError('sessionledger: issuer is required');
    if (o.mode !== 'cookie' && o.mode !== 'token') throw new TypeError("sessionledger: mode must be 'cookie' or 'token'");
    this.issuer = o.issuer.replace(/\/+$/, '');
    this.mode = o.mode;
    this.margin = (o.refreshMargin ?? 30) * 1000;
    this.lockTimeout = o.lockTimeout ?? 5000;
    this.peerTimeout = o.peerTimeout ?? 150;
    this.minForcedInterval = o.minForcedRefreshInterval ?? 5000;
    this.requestTimeout = o.requestTimeout ?? 8000;
    this.storage = o.storage ?? memoryStorage();
    this.storageKey = o.storageKey ?? 'sessionledger:refresh-token:' + this.issuer;
    const f = o.fetch ?? (globalThis as any).fetch;
    if (typeof f !== 'function') throw new TypeError('sessionledger: no fetch available; pass options.fetch');
    this.fetchImpl = o.fetch ? o.fetch : f.bind(globalThis);
    if (o.apiOrigins !== undefined) {
      if (!Array.isArray(o.apiOrigins)) throw new TypeError('sessionledger: apiOrigins must be an array of origins');
      this.apiOrigins = new Set(o.apiOrigins.map(normalizeOrigin));
    } else {
      const dflt = new Set<string>();
      const loc = pageLocation();
      if (loc && typeof loc.origin === 'string' && loc.origin !== 'null') dflt.add(loc.origin);
      try {
        dflt.add(new URL(this.issuer).origin);
      } catch {
        /* an issuer that is not a URL: its requests fail on their own */
      }
      this.apiOrigins = dflt;
    }
    this.now = o.now ?? Date.now;
    // Tabs share a session in cookie mode (one cookie jar) and in token mode with a storage they
    // share (localStorage); with the default memory storage each client has a session of its own.
    const shared = this.mode === 'cookie' || o.storage !== undefined;
    const nav = (globalThis as any).navigator;
    this.locks = o.locks !== undefined ? o.locks
      : shared && nav && nav.locks && typeof nav.locks.request === 'function' ? nav.locks : null;
    this.lockName = 'sessionledger-refresh:' + this.issuer;
    this.channel = null;
    const make = o.broadcastChannel !== undefined ? o.broadcastChannel
      : shared && typeof (globalThis as any).BroadcastChannel === 'function' ? (n: string) => new (globalThis as any).BroadcastChannel(n) : null;
    if (make) {
      try {
        const ch = make('sessionledger:' + this.issuer);
        ch.onmessage = (ev: MessageEvent) => this.onMessage(ev.data);
        this.channel = ch;
      } catch {
        this.channel = null;
      }
    }
    this.status = this.mode === 'token' ? (this.storedRefreshToken() ? 'signed-in' : 'signed-out') : 'unknown';
  }

  // --- public API ----------------------------------------------------------

  async signIn(refreshToken: string): Promise<void> {
    if (typeof refreshToken !== 'string' || refreshToken === '') throw new TypeError('sessionledger: signIn needs a refresh token');
    await this.settle();
    await this.withLock(async () => {
      const t0 = this.now();
      let res: Response;
      if (this.mode === 'cookie') {
        res = await this.post('sign-in', '/browser/signin', { refresh_token: refreshToken });
      } else {
        this.storage.setItem(this.storageKey, refreshToken);
        res = await this.postForm('sign-in', '/oauth2/token', { grant_type: 'refresh_token', refresh_token: refreshToken });
      }
      if (!res.ok) {
        const err = await responseError('sign-in', res, this.secrets(refreshToken));
        if (res.status === 400 && err.code === 'invalid_grant') {
          // The ledger cleared the cookie (cookie mode); the stored token was replaced (token mode).
          if (this.mode === 'token') this.removeStored(refreshToken);
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

  async getAccessToken(): Promise<string | null> {
    const t = this.acceptable(null);
    if (t) return t.accessToken;
    if (this.status === 'signed-out' && !(this.mode === 'token' && this.storedRefreshToken())) return null;
    const r = await this.refresh(null);
    return r ? r.accessToken : null;
  }

  async fetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response> {
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
  private async authorized(input: RequestInfo | URL, init?: RequestInit, what?: string): Promise<Response> {
    const call = (i: RequestInfo | URL, ri: RequestInit) => (what !== undefined ? this.send(what, i, ri) : this.fetchImpl(i, ri));
    const token = await this.getAccessToken();
    if (token === null) throw new SignedOutError();
    const isRequest = typeof Request === 'function' && input instanceof Request;
    const body = init ? init.body : undefined;
    const streamed = typeof ReadableStream === 'function' && body instanceof ReadableStream;
    const spare = isRequest && !streamed ? (input as Request).clone() : input;
    const res = await call(input, this.withBearer(input, init, token));
    if (res.status !== 401 || !isInvalidTokenChallenge(res.headers.get('WWW-Authenticate')) || streamed) return res;
    const fresh = await this.replacement(token);
    if (!fresh || fresh.accessToken === token) return res;
    try {
      await res.body?.cancel();
    } catch {
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
  private async replacement(token: string): Promise<Tok | null> {
    const cur = this.tok;
    if (!cur) return null; // signed out meanwhile
    if (cur.accessToken !== token) {
      const t = this.acceptable(token);
      if (t || this.status === 'signed-out') return t;
      return this.refresh(token); // the successor has expired too: an ordinary refresh
    }
    if (this.forcedFor === token) {
      // A forced refresh for this token is under way (join it) or has failed (no second one).
      const inf = this.inflight;
      return inf && inf.rejected === token ? inf.promise : null;
    }
    const now = this.now();
    if (this.lastForced !== null && now - this.lastForced < this.minForcedInterval) return null;
    this.forcedFor = token;
    this.lastForced = now;
    this.invalidate(token);
    return this.refresh(token);
  }

  async signOut(): Promise<void> {
    await this.settle();
    await this.withLock(async () => {
      if (this.mode === 'cookie') {
        const res = await this.post('sign-out', '/browser/signout', {});
        if (!res.ok) throw await responseError('sign-out', res, this.secrets());
      } else {
        const rt = this.storedRefreshToken();
        if (rt) {
          const res = await this.postForm('sign-out', '/oauth2/revoke', { token: rt });
          if (!res.ok) throw await responseError('sign-out', res, this.secrets());
          this.removeStored(rt);
        }
      }
      this.toSignedOut(true, true);
    });
  }

  onChange(cb: (e: SessionEvent) => void): () => void {
    const wrapped = (e: SessionEvent) => cb(e);
    this.listeners.add(wrapped);
    return () => void this.listeners.delete(wrapped);
  }

  async listSessions(): Promise<SessionInfo[]> {
    const out: SessionInfo[] = [];
    let cursor: string | undefined;
    const seen = new Set<string>();
    for (;;) {
      const url = this.issuer + '/v1/me/sessions' + (cursor ? '?cursor=' + encodeURIComponent(cursor) : '');
      const res = await this.authorized(url, { method: 'GET', credentials: 'omit', headers: { Accept: 'application/json' } }, 'list sessions');
      if (!res.ok) throw await this.selfServiceError('list sessions', res);
      const body = await readBody(res);
      if (!body || !Array.isArray(body.sessions)) throw new SessionError('sessionledger: list sessions failed: the answer has no sessions', res.status, 'invalid_response');
      for (const s of body.sessions) out.push(toSessionInfo(s));
      if (typeof body.next_cursor !== 'string' || body.next_cursor === '') return out;
      if (seen.has(body.next_cursor)) throw new SessionError('sessionledger: list sessions failed: the ledger repeated a cursor', res.status, 'invalid_response');
      seen.add(body.next_cursor);
      cursor = body.next_cursor;
    }
  }

  async revokeSession(id: string): Promise<void> {
    if (typeof id !== 'string' || id === '') throw new TypeError('sessionledger: revokeSession needs a session id');
    const res = await this.authorized(this.issuer + '/v1/me/sessions/' + encodeURIComponent(id), { method: 'DELETE', credentials: 'omit' }, 'revoke session');
    if (!res.ok) throw await this.selfServiceError('revoke session', res);
    if (id !== this.sid) return;
    // The current session: a sign-out, here and in the other tabs.
    if (this.mode === 'token') {
      const rt = this.storedRefreshToken();
      if (rt) this.removeStored(rt);
    }
    this.toSignedOut(true, true);
    if (this.mode === 'cookie') {
      // The ledger's cookie still holds the dead session's refresh token: have it cleared. Under the
      // refresh lock, and not if a sign-in (here or in another tab) has come since: signout ends
      // whatever session the cookie holds.
      const epoch = this.epoch;
      try {
        await this.withLock(async () => {
          if (this.epoch !== epoch) return;
          await this.post('sign-out', '/browser/signout', {});
        });
      } catch {
        /* best effort: a refresh with the dead token is refused, and the ledger clears the cookie then */
      }
    }
  }

  async signOutOtherDevices(): Promise<number> {
    const res = await this.authorized(this.issuer + '/v1/me/sessions/revoke-others', { method: 'POST', credentials: 'omit' }, 'sign out other devices');
    if (!res.ok) throw await this.selfServiceError('sign out other devices', res);
    const body = await readBody(res);
    if (!body || typeof body.revoked !== 'number') throw new SessionError('sessionledger: sign out other devices failed: the answer has no count', res.status, 'invalid_response');
    return body.revoked;
  }

  /** The error of a failed self-service call: SignedOutError if its retry found the session over. */
  private async selfServiceError(what: string, res: Response): Promise<SessionError> {
    if (res.status === 401 && this.status === 'signed-out') {
      await readBody(res);
      return new SignedOutError(`sessionledger: ${what} failed: the session is over`);
    }
    return responseError(what, res, this.secrets());
  }

  close(): void {
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
  private acceptable(rejected: string | null): Tok | null {
    const t = this.tok;
    if (!t || (rejected !== null && t.accessToken === rejected)) return null;
    const left = t.expiresAt - this.now();
    const margin = t.lifetime !== undefined ? Math.min(this.margin, t.lifetime / 2) : this.margin;
    return left > 0 && left >= margin ? t : null;
  }

  private setTok(t: Tok): void {
    this.tok = t;
    if (t.sessionId) this.sid = t.sessionId;
    for (const w of [...this.waiters]) w();
  }

  /** Marks a token the server refused as unusable. */
  private invalidate(token: string): void {
    if (this.tok && this.tok.accessToken === token) this.tok = { ...this.tok, expiresAt: -Infinity };
  }

  /** Clears the session. `broadcast`: tell the other tabs; `always`: even if this tab knew no session. */
  private toSignedOut(broadcast: boolean, always = false): void {
    const was = this.status;
    const sid = this.sid;
    this.tok = null;
    this.sid = undefined;
    this.status = 'signed-out';
    this.epoch++;
    if (sid) this.ended.add(sid);
    for (const w of [...this.waiters]) w();
    if (broadcast && (always || was === 'signed-in')) this.broadcast(sid ? { type: 'signed-out', sessionId: sid } : { type: 'signed-out' });
    if (was === 'signed-in') this.emit(sid ? { type: 'signed-out', sessionId: sid } : { type: 'signed-out' });
  }

  private emit(e: SessionEvent): void {
    for (const l of [...this.listeners]) {
      try {
        l({ ...e });
      } catch (err) {
        const report = (globalThis as any).reportError;
        if (typeof report === 'function') report(err);
        else console.error(err);
      }
    }
  }

  /** The tokens this client knows, which no error message may contain. */
  private secrets(...extra: string[]): (string | null | undefined)[] {
    return [...extra, this.tok ? this.tok.accessToken : null, this.mode === 'token' ? this.storedRefreshToken() : null];
  }

  private storedRefreshToken(): string | null {
    try {
      return this.storage.getItem(this.storageKey);
    } catch {
      return null;
    }
  }

  /** Removes the stored refresh token if it is still `rt` (another tab may have replaced it). */
  private removeStored(rt: string): void {
    if (this.storedRefreshToken() === rt) this.storage.removeItem(this.storageKey);
  }

  /** Waits for this tab's refresh in flight, if any, ignoring its outcome. */
  private async settle(): Promise<void> {
    const cur = this.inflight;
    if (cur) await cur.promise.then(() => undefined, () => undefined);
  }

  // --- other tabs ----------------------------------------------------------

  private broadcast(m: Msg): void {
    const ch = this.channel;
    if (!ch) return;
    try {
      ch.postMessage(m);
    } catch {
      /* a closed channel: the other tabs find out on their own */
    }
  }

  private onMessage(data: unknown): void {
    const m = parseMsg(data);
    if (!m) return;
    switch (m.type) {
      case 'token?': {
        const t = this.acceptable(null);
        if (t) this.broadcast({ type: 'token!', id: m.id, ...t });
        return;
      }
      case 'token!':
        if (this.asks.has(m.id)) this.adopt(m, 'refreshed');
        return;
      case 'refreshed':
        this.adopt(m, 'refreshed');
        return;
      case 'signed-in': {
        if (m.sessionId && this.ended.has(m.sessionId)) return;
        this.epoch++;
        this.status = 'signed-in';
        this.setTok(tokOf(m));
        this.emit({ type: 'signed-in', sessionId: m.sessionId });
        return;
      }
      case 'signed-out':
        if (m.sessionId && this.sid && m.sessionId !== this.sid) return; // about an older session
        if (m.sessionId) this.ended.add(m.sessionId);
        if (this.status !== 'signed-out') this.toSignedOut(false);
        return;
    }
  }

  /** Takes a peer's token if it is newer than this tab's. */
  private adopt(m: Tok, type: 'refreshed'): void {
    if (m.sessionId && this.ended.has(m.sessionId)) return;
    const cur = this.tok;
    if (cur && (cur.accessToken === m.accessToken || cur.expiresAt > m.expiresAt)) return;
    if (m.expiresAt <= this.now()) return;
    this.status = 'signed-in';
    this.setTok(tokOf(m));
    this.emit({ type, sessionId: m.sessionId });
  }

  /** Asks the other tabs for a token valid ≥ margin; waits up to peerTimeout. */
  private askPeers(rejected: string | null, epoch: number): Promise<Tok | null> {
    if (!this.channel) return Promise.resolve(null);
    const id = randomId();
    return new Promise((resolve) => {
      const check = () => {
        const t = this.acceptable(rejected);
        if (t || this.epoch !== epoch) done(t);
      };
      const done = (t: Tok | null) => {
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
  private refresh(rejected: string | null): Promise<Tok | null> {
    const cur = this.inflight;
    if (cur) {
      if (rejected === null || cur.rejected === rejected) return cur.promise;
      return cur.promise.then(() => undefined, () => undefined).then(() => this.acceptable(rejected) ?? this.refresh(rejected));
    }
    const p: Promise<Tok | null> = this.flow(rejected).finally(() => {
      if (this.inflight && this.inflight.promise === p) this.inflight = null;
    });
    this.inflight = { promise: p, rejected };
    return p;
  }

  /** The cross-tab refresh: lock if free; else wait (bounded) for it and look for the holder's token. */
  private async flow(rejected: string | null): Promise<Tok | null> {
    const epoch = this.epoch;
    const locks = this.locks;
    if (!locks) return this.attempt(rejected, epoch, this.tok === null);
    let granted = false;
    let first: Tok | null | typeof NOT_FREE;
    try {
      first = await locks.request<Tok | null | typeof NOT_FREE>(this.lockName, { ifAvailable: true }, (lock) => {
        granted = true;
        if (!lock) return NOT_FREE;
        return this.attempt(rejected, epoch, this.tok === null);
      });
    } catch (e) {
      if (granted) throw e;
      return this.attempt(rejected, epoch, this.tok === null); // no usable lock manager here
    }
    if (first !== NOT_FREE) return first;
    // Another tab is refreshing: wait for its lock, then its token will usually be here.
    // Holding it, ask the peers (its broadcast may not be here yet); after a timeout (an orphaned
    // lock) go straight to the ledger unless this tab has no token at all.
    return this.withLock((locked) => this.attempt(rejected, epoch, locked || this.tok === null));
  }

  /**
   * Runs fn holding the refresh lock, waiting at most lockTimeout for it; after that (an orphaned
   * lock) runs it without the lock, which the ledger's reuse grace window makes safe.
   */
  private async withLock<T>(fn: (locked: boolean) => Promise<T>): Promise<T> {
    const locks = this.locks;
    if (!locks) return fn(false);
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(), this.lockTimeout);
    let granted = false;
    try {
      return await locks.request(this.lockName, { signal: ac.signal }, () => {
        granted = true;
        clearTimeout(timer);
        return fn(true);
      });
    } catch (e) {
      if (granted) throw e;
      return fn(false);
    } finally {
      clearTimeout(timer);
    }
  }

  /** A token from this tab, from a peer, or from the ledger, in that order. */
  private async attempt(rejected: string | null, epoch: number, askPeers: boolean): Promise<Tok | null> {
    const have = this.acceptable(rejected);
    if (have || this.epoch !== epoch) return have;
    if (askPeers) {
      const t = await this.askPeers(rejected, epoch);
      if (t || this.epoch !== epoch) return t ?? this.acceptable(rejected);
    }
    return this.serverRefresh(rejected, epoch);
  }

  private async serverRefresh(rejected: string | null, epoch: number): Promise<Tok | null> {
    if (this.mode === 'cookie') {
      const t0 = this.now();
      const res = await this.post('refresh', '/browser/refresh', {});
      if (res.ok) return this.refreshed(await this.readTokens('refresh', res, t0), rejected, epoch);
      const err = await responseError('refresh', res, this.secrets());
      if (res.status === 400 && err.code === 'invalid_grant') {
        if (this.epoch !== epoch) return this.acceptable(rejected);
        this.toSignedOut(true);
        return null;
      }
      throw err;
    }
    // Token mode; a second round when another tab replaced the stored token meanwhile.
    for (let round = 0; ; round++) {
      const rt = this.storedRefreshToken();
      if (!rt) {
        if (this.epoch === epoch) this.toSignedOut(false);
        return this.acceptable(rejected);
      }
      const t0 = this.now();
      const res = await this.postForm('refresh', '/oauth2/token', { grant_type: 'refresh_token', refresh_token: rt });
      if (res.ok) return this.refreshed(await this.readTokens('refresh', res, t0, rt), rejected, epoch);
      const err = await responseError('refresh', res, this.secrets(rt));
      if (res.status !== 400 || err.code !== 'invalid_grant') throw err;
      if (this.epoch !== epoch) return this.acceptable(rejected);
      const now = this.storedRefreshToken();
      if (now && now !== rt && round === 0) continue;
      this.removeStored(rt);
      this.toSignedOut(true);
      return null;
    }
  }

  /** Records tokens this tab got from the ledger and tells the other tabs. */
  private refreshed(tok: Tok, rejected: string | null, epoch: number): Tok | null {
    if (this.epoch !== epoch) return this.acceptable(rejected); // signed out or in anew meanwhile
    if (tok.sessionId && this.ended.has(tok.sessionId)) return null;
    this.status = 'signed-in';
    this.setTok(tok);
    this.broadcast({ type: 'refreshed', ...tok });
    this.emit({ type: 'refreshed', sessionId: tok.sessionId });
    return tok;
  }

  /** Reads a token response; in token mode stores the new refresh token in place of `sent`. */
  private async readTokens(what: string, res: Response, t0: number, sent?: string): Promise<Tok> {
    const b = await readBody(res);
    if (!b || typeof b.access_token !== 'string' || b.access_token === '' || typeof b.expires_in !== 'number') {
      throw new SessionError(`sessionledger: ${what} failed: the answer has no access token`, res.status, 'invalid_response');
    }
    if (this.mode === 'token') {
      if (typeof b.refresh_token !== 'string' || b.refresh_token === '') {
        throw new SessionError(`sessionledger: ${what} failed: the answer has no refresh token`, res.status, 'invalid_response');
      }
      // Written before any broadcast; not over a token another tab put there meanwhile.
      if (sent === undefined || this.storedRefreshToken() === sent) this.storage.setItem(this.storageKey, b.refresh_token);
    }
    const tok: Tok = { accessToken: b.access_token, expiresAt: t0 + b.expires_in * 1000, lifetime: b.expires_in * 1000 };
    if (typeof b.session_id === 'string' && b.session_id !== '') tok.sessionId = b.session_id;
    return tok;
  }

  // --- HTTP ------------------------------------------------------------------

  /** A cookie-mode POST: JSON (the ledger's CSRF defence) with credentials. */
  private async post(what: string, path: string, body: object): Promise<Response> {
    return this.send(what, this.issuer + path, {
      method: 'POST',
      credentials: 'include',
      cache: 'no-store',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
  }

  /** A token-mode POST: a form, no cookies. */
  private async postForm(what: string, path: string, form: Record<string, string>): Promise<Response> {
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
  private async send(what: string, url: RequestInfo | URL, init: RequestInit): Promise<Response> {
    const d = deadline(this.requestTimeout);
    try {
      const signal = d.signal;
      if (!signal) return await this.fetchImpl(url, init);
      const res = await untilAborted(this.fetchImpl(url, { ...init, signal }), signal);
      let text = '';
      try {
        text = await untilAborted(res.text(), signal);
      } catch (e) {
        if (signal.aborted) throw e;
        /* an unreadable body: treated as none, as readBody would */
      }
      return buffered(res, text);
    } catch (e) {
      if (d.signal && d.signal.aborted) {
        throw new SessionError(`sessionledger: ${what} failed: no answer from the ledger within ${this.requestTimeout} ms`, 0, 'timeout', undefined, { cause: e });
      }
      const name = e && typeof e === 'object' && typeof (e as any).name === 'string' ? (e as any).name : 'Error';
      throw new SessionError(`sessionledger: ${what} failed: no answer from the ledger (${name})`, 0, undefined, undefined, { cause: e });
    } finally {
      d.clear();
    }
  }

  private withBearer(input: RequestInfo | URL, init: RequestInit | undefined, token: string): RequestInit {
    const isRequest = typeof Request === 'function' && input instanceof Request;
    const headers = new Headers(init && init.headers !== undefined ? init.headers : isRequest ? (input as Request).headers : undefined);
    headers.set('Authorization', 'Bearer ' + token);
    return { ...init, headers };
  }
}

function toSessionInfo(s: any): SessionInfo {
  const d = s && typeof s.device === 'object' && s.device !== null ? s.device : {};
  const device: SessionInfo['device'] = {};
  if (typeof d.ip === 'string') device.ip = d.ip;
  if (typeof d.user_agent === 'string') device.userAgent = d.user_agent;
  if (typeof d.name === 'string') device.name = d.name;
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
export function createSessionClient(opts: SessionClientOptions): SessionClient {
  return new Client(opts);
}
