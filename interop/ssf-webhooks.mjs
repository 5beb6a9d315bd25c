// What services that speak HTTP see of a running ledger, checked with
// libraries nobody here wrote: the Standard Webhooks library verifies the
// webhooks (and refuses a tampered one), jose verifies the SSF transmitter's
// Security Event Tokens, pushed (RFC 8935) and polled (RFC 8936), against
// the JWKS its metadata names. This script is the receiver: it serves the
// webhook and push endpoints on 127.0.0.1, and makes the admin and receiver
// calls itself. Run by cmd/sessionledger/transmit_interop_node_test.go;
// exits non-zero at the first check that fails, saying which.
//
// Environment: LEDGER_ISSUER (the ledger's issuer, which is its URL),
// ADMIN_TOKEN.
import http from 'node:http'
import { Webhook, WebhookVerificationError } from 'standardwebhooks'
import * as jose from 'jose'

const env = (name) => {
  const v = process.env[name]
  if (!v) throw new Error(`${name} is not set`)
  return v
}
const issuer = env('LEDGER_ISSUER').replace(/\/$/, '')
const admin = { authorization: `Bearer ${env('ADMIN_TOKEN')}` }
const SESSION_REVOKED = 'https://schemas.openid.net/secevent/caep/event-type/session-revoked'

function check(ok, what, detail) {
  if (!ok) {
    console.error(`FAIL: ${what}${detail === undefined ? '' : `: ${JSON.stringify(detail)}`}`)
    process.exit(1)
  }
  console.log(`ok: ${what}`)
}

async function call(method, path, headers, body) {
  const res = await fetch(issuer + path, {
    method,
    headers: { ...headers, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  })
  const text = await res.text()
  return { status: res.status, body: text ? JSON.parse(text) : null }
}

// The receiver: every request kept, with its headers and raw body.
const received = { webhook: [], push: [] }
const waiters = []
const server = http.createServer((req, res) => {
  const chunks = []
  req.on('data', (c) => chunks.push(c))
  req.on('end', () => {
    const kind = req.url.startsWith('/webhook') ? 'webhook' : 'push'
    received[kind].push({ headers: req.headers, body: Buffer.concat(chunks).toString('utf8') })
    res.writeHead(kind === 'push' ? 202 : 204).end()
    for (const w of waiters.splice(0)) w()
  })
})
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
const base = `http://127.0.0.1:${server.address().port}`
async function waitFor(kind, n) {
  const deadline = Date.now() + 15000
  while (received[kind].length < n) {
    if (Date.now() > deadline) check(false, `a ${kind} delivery arrived`, received[kind].length)
    await new Promise((resolve) => { waiters.push(resolve); setTimeout(resolve, 200) })
  }
  return received[kind]
}

// The transmitter's metadata (SSF 1.0 §6.1).
const meta = await call('GET', '/.well-known/ssf-configuration')
const m = meta.body
check(meta.status === 200 && m.spec_version === '1_0' && m.issuer === issuer && m.jwks_uri === `${issuer}/.well-known/ssf-jwks.json`
  && m.delivery_methods_supported.includes('urn:ietf:rfc:8935') && m.delivery_methods_supported.includes('urn:ietf:rfc:8936')
  && m.configuration_endpoint && m.status_endpoint && m.verification_endpoint && Array.isArray(m.authorization_schemes),
'transmitter metadata has the SSF 1.0 members', m)
const jwks = jose.createRemoteJWKSet(new URL(m.jwks_uri))

// A webhook, a receiver, a push stream and a poll stream.
const hook = await call('POST', '/v1/webhooks', admin, { url: `${base}/webhook`, events: ['session.revoked'] })
check(hook.status === 201 && hook.body.secret.startsWith('whsec_'), 'webhook created with a signing secret', hook)
const rcv = await call('POST', '/v1/ssf/receivers', admin, { name: 'node', audience: 'https://node-receiver.example' })
check(rcv.status === 201 && rcv.body.token.startsWith('slsr_'), 'receiver registered', rcv.status)
const bearer = { authorization: `Bearer ${rcv.body.token}` }
const push = await call('POST', new URL(m.configuration_endpoint).pathname, bearer, {
  delivery: { method: 'urn:ietf:rfc:8935', endpoint_url: `${base}/ssf`, authorization_header: 'Bearer push-secret' },
  events_requested: [SESSION_REVOKED],
})
check(push.status === 201 && push.body.events_delivered.includes(SESSION_REVOKED), 'push stream created', push)
const polled = await call('POST', new URL(m.configuration_endpoint).pathname, bearer, {
  delivery: { method: 'urn:ietf:rfc:8936' }, events_requested: [SESSION_REVOKED],
})
check(polled.status === 201 && polled.body.delivery.endpoint_url.startsWith(issuer), 'poll stream created', polled)

// A session is issued and revoked.
const s = await call('POST', '/v1/sessions', admin, { user_id: 'dana' })
const revoked = await call('DELETE', `/v1/sessions/${s.body.session_id}`, admin)
check(revoked.status === 204, 'session revoked', revoked.status)

// The webhook verifies with the Standard Webhooks library; tampered, it does not.
const [w] = await waitFor('webhook', 1)
const wh = new Webhook(hook.body.secret)
const payload = wh.verify(w.body, w.headers)
check(payload.type === 'session.revoked' && payload.data.session_id === s.body.session_id && payload.data.user_id === 'dana',
  'standardwebhooks verifies the webhook', payload)
const tampered = w.body.replace('dana', 'dane')
let refused = null
try { wh.verify(tampered, w.headers) } catch (e) { refused = e }
check(refused instanceof WebhookVerificationError, 'standardwebhooks refuses a tampered webhook', String(refused))
try { new Webhook(`whsec_${Buffer.alloc(32, 7).toString('base64')}`).verify(w.body, w.headers); refused = null } catch (e) { refused = e }
check(refused instanceof WebhookVerificationError, 'standardwebhooks refuses the webhook under another secret', String(refused))

// The pushed SET verifies with jose against the jwks_uri.
async function verifySET(set, what) {
  const { payload, protectedHeader } = await jose.jwtVerify(set, jwks, {
    issuer, audience: 'https://node-receiver.example', typ: 'secevent+jwt', algorithms: ['RS256'],
  })
  const events = Object.keys(payload.events)
  const ev = payload.events[SESSION_REVOKED]
  check(protectedHeader.kid && payload.sub === undefined && payload.exp === undefined && payload.jti && payload.iat
    && events.length === 1 && ev && Number.isInteger(ev.event_timestamp) && ev.initiating_entity === 'admin'
    && typeof ev.reason_admin?.en === 'string'
    && payload.sub_id?.format === 'complex' && payload.sub_id.user.format === 'iss_sub' && payload.sub_id.user.iss === issuer
    && payload.sub_id.user.sub === 'dana' && payload.sub_id.session.format === 'opaque' && payload.sub_id.session.id === s.body.session_id,
  `jose verifies the ${what} SET: one session-revoked event, sub_id, no sub or exp`, { protectedHeader, payload })
  return payload
}
const [p] = await waitFor('push', 1)
check(p.headers['content-type'] === 'application/secevent+jwt' && p.headers.authorization === 'Bearer push-secret',
  'the push is application/secevent+jwt with the stream\'s authorization header', p.headers)
const pushedClaims = await verifySET(p.body, 'pushed')

// A SET with one byte of its payload changed (the user "dana" becomes
// "dane") does not verify.
const [h64, p64, sig] = p.body.split('.')
const original = Buffer.from(p64, 'base64url')
const forged = Buffer.from(original.toString().replace('"dana"', '"dane"'))
check(forged.length === original.length && forged.filter((c, i) => c !== original[i]).length === 1,
  'the forged payload differs from the signed one in one byte')
refused = null
try {
  await jose.jwtVerify(`${h64}.${forged.toString('base64url')}.${sig}`, jwks, { issuer, typ: 'secevent+jwt', algorithms: ['RS256'] })
} catch (e) { refused = e }
check(refused?.code === 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED', 'jose refuses a SET with a changed payload', refused?.code)

// Poll: the same event, the same jti; acknowledged, it is not returned again.
const pollPath = new URL(polled.body.delivery.endpoint_url).pathname
const first = await call('POST', pollPath, bearer, { returnImmediately: true })
const jtis = Object.keys(first.body.sets)
check(first.status === 200 && jtis.length === 1 && jtis[0] === pushedClaims.jti, 'the poll returns the SET under the pushed jti', first.body)
await verifySET(first.body.sets[jtis[0]], 'polled')
const second = await call('POST', pollPath, bearer, { returnImmediately: true, ack: jtis })
check(second.status === 200 && Object.keys(second.body.sets).length === 0, 'an acknowledged SET is not polled again', second.body)

server.close()
