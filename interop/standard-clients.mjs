// What standard OAuth libraries see of a running ledger: oauth4webapi (RFC 9068
// access-token validation, refresh, introspection with client_secret_basic,
// revocation) and jose (JWT verification against the JWKS). Run by
// cmd/sessionledger/interop_node_test.go against a ledger it started; exits
// non-zero at the first check that fails, saying which.
//
// Environment: LEDGER_ISSUER (the ledger's issuer, which is its URL),
// ACCESS_TOKEN and REFRESH_TOKEN of a fresh session, CLIENT_ID (the client
// the session was issued for), INTROSPECTION_CLIENT_ID and
// INTROSPECTION_CLIENT_SECRET (made with "sessionledger introspection-clients add"),
// TOKEN_WITHOUT_CLIENT_ID (signed by the ledger's key, lacking the claim).
import * as oauth from 'oauth4webapi'
import * as jose from 'jose'

const env = (name) => {
  const v = process.env[name]
  if (!v) throw new Error(`${name} is not set`)
  return v
}
const issuer = new URL(env('LEDGER_ISSUER'))
const clientID = env('CLIENT_ID')
const insecure = { [oauth.allowInsecureRequests]: true } // the test ledger is on http://127.0.0.1

function check(ok, what, detail) {
  if (!ok) {
    console.error(`FAIL: ${what}${detail === undefined ? '' : `: ${JSON.stringify(detail)}`}`)
    process.exit(1)
  }
  console.log(`ok: ${what}`)
}

// Discovery (RFC 8414).
const as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { algorithm: 'oauth2', ...insecure }))
check(JSON.stringify(as.introspection_endpoint_auth_methods_supported) === '["client_secret_basic"]',
  'metadata advertises client_secret_basic for introspection', as.introspection_endpoint_auth_methods_supported)

// RFC 9068: the resource server's validation of a JWT access token.
async function validate(accessToken, scheme = 'Bearer') {
  const request = new Request(new URL('/api', issuer), { headers: { authorization: `${scheme} ${accessToken}` } })
  return oauth.validateJwtAccessToken(as, request, issuer.href.replace(/\/$/, ''), insecure)
}
let claims = await validate(env('ACCESS_TOKEN'))
check(claims.client_id === clientID && typeof claims.sid === 'string', 'oauth4webapi validateJwtAccessToken accepts the access token (RFC 9068), client_id as issued', claims.client_id)

// The same validation refuses a token signed by the ledger's key without the
// claim, as ledgers before client_id made them: the check above is real.
let missing
try {
  await validate(env('TOKEN_WITHOUT_CLIENT_ID'))
} catch (err) {
  missing = err
}
check(missing !== undefined && /client_id/.test(missing.message), 'a token without client_id is refused by oauth4webapi', missing && missing.message)

// jose against the JWKS, algorithm and type pinned.
const jwks = jose.createRemoteJWKSet(new URL(as.jwks_uri))
const { payload, protectedHeader } = await jose.jwtVerify(env('ACCESS_TOKEN'), jwks, {
  issuer: as.issuer, audience: as.issuer, typ: 'at+jwt', algorithms: ['EdDSA', 'Ed25519'], requiredClaims: ['client_id', 'jti', 'sub', 'iat', 'exp'],
})
check(payload.client_id === clientID && protectedHeader.kid !== undefined, 'jose jwtVerify accepts it against the JWKS', protectedHeader)

// A refresh as a public client (RFC 6749 §6), then RFC 9068 again on the new token.
const client = { client_id: clientID }
const refreshed = await oauth.processRefreshTokenResponse(as, client,
  await oauth.refreshTokenGrantRequest(as, client, oauth.None(), env('REFRESH_TOKEN'), insecure))
check(refreshed.token_type === 'bearer' && typeof refreshed.refresh_token === 'string' && refreshed.refresh_token !== env('REFRESH_TOKEN'),
  'oauth4webapi refreshTokenGrantRequest rotates the refresh token')
claims = await validate(refreshed.access_token, 'bearer')
check(claims.client_id === clientID, 'the refreshed access token validates too (scheme in lower case)')

// Introspection (RFC 7662) as a resource server: client_secret_basic.
const rs = { client_id: env('INTROSPECTION_CLIENT_ID') }
const basic = oauth.ClientSecretBasic(env('INTROSPECTION_CLIENT_SECRET'))
let info = await oauth.processIntrospectionResponse(as, rs, await oauth.introspectionRequest(as, rs, basic, refreshed.access_token, insecure))
check(info.active === true && info.client_id === clientID && info.sub === claims.sub, 'introspection with client_secret_basic: the access token is active, with its client_id', info)
info = await oauth.processIntrospectionResponse(as, rs, await oauth.introspectionRequest(as, rs, basic, refreshed.refresh_token, insecure))
check(info.active === false, 'a resource server is told nothing about a refresh token, which it is never sent', info)

let refusal
try {
  await oauth.processIntrospectionResponse(as, rs, await oauth.introspectionRequest(as, rs, oauth.ClientSecretBasic('not-the-secret'), refreshed.access_token, insecure))
} catch (err) {
  refusal = err
}
// oauth4webapi reports a 401 with a challenge as the challenge; the body is RFC 6749 §5.2's.
const challenged = refusal instanceof oauth.WWWAuthenticateChallengeError && refusal.status === 401 &&
  refusal.cause.some((c) => c.scheme === 'basic')
const body = challenged ? await refusal.response.json() : undefined
check(challenged && body.error === 'invalid_client', 'a wrong secret is 401 invalid_client with a Basic challenge', refusal && { name: refusal.name, status: refusal.status, body })

// Revocation (RFC 7009) as a public client: the session ends.
await oauth.processRevocationResponse(await oauth.revocationRequest(as, client, oauth.None(), refreshed.refresh_token, insecure))
info = await oauth.processIntrospectionResponse(as, rs, await oauth.introspectionRequest(as, rs, basic, refreshed.access_token, insecure))
check(info.active === false, 'after revocation the access token introspects inactive', info)
