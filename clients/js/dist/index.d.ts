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
export type SessionEvent = {
    type: 'signed-in' | 'refreshed' | 'signed-out';
    sessionId?: string;
};
/** The minimal storage the client needs in token mode (`localStorage` and `sessionStorage` fit). */
export interface SessionStorageLike {
    getItem(key: string): string | null;
    setItem(key: string, value: string): void;
    removeItem(key: string): void;
}
/** The part of the Web Locks API (`navigator.locks`) the client uses. */
export interface LockManagerLike {
    request<T>(name: string, options: {
        ifAvailable?: boolean;
        signal?: AbortSignal;
    }, callback: (lock: unknown | null) => T | PromiseLike<T>): Promise<T>;
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
    device: {
        ip?: string;
        userAgent?: string;
        name?: string;
    };
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
export declare class SessionError extends Error {
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
    constructor(message: string, status: number, code?: string, description?: string, options?: {
        cause?: unknown;
        secrets?: readonly (string | null | undefined)[];
    });
}
/** Thrown by {@link SessionClient.fetch} and the self-service calls when there is no session. */
export declare class SignedOutError extends SessionError {
    constructor(message?: string);
}
/** Creates a {@link SessionClient}. See {@link SessionClientOptions}. */
export declare function createSessionClient(opts: SessionClientOptions): SessionClient;
