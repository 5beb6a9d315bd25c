// Verifies, with panva/jose, access tokens signed across signing-key
// rotations, each against the JWKS a verifier following the ledger held
// when the token arrived (fetched up to the served max-age before): every
// token must verify, its algorithm pinned to the one the test expects.
// Run by go test (cmd/sessionledger/rotation_e2e_test.go) with the path of a
// JSON file: {"alg","issuer","audience","tokens":[{"token","at","jwks"}]}.
import { readFileSync } from 'node:fs'
import { createLocalJWKSet, jwtVerify, decodeProtectedHeader } from 'jose'

const input = JSON.parse(readFileSync(process.argv[2], 'utf8'))
let verified = 0
const kids = new Set()
for (const { token, at, jwks } of input.tokens) {
  const keys = createLocalJWKSet(jwks)
  try {
    await jwtVerify(token, keys, {
      algorithms: [input.alg],
      typ: 'at+jwt',
      issuer: input.issuer,
      audience: input.audience,
      currentDate: new Date(at),
      requiredClaims: ['exp', 'iat', 'sub', 'sid'],
    })
  } catch (e) {
    console.error(`refused: kid ${decodeProtectedHeader(token).kid} at ${at}: ${e.code ?? ''} ${e.message}`)
    process.exit(1)
  }
  kids.add(decodeProtectedHeader(token).kid)
  verified++
}
// The same tokens with another algorithm pinned must all be refused.
const other = input.alg === 'RS256' ? 'ES256' : 'RS256'
for (const { token, at, jwks } of input.tokens.slice(0, 5)) {
  try {
    await jwtVerify(token, createLocalJWKSet(jwks), { algorithms: [other], currentDate: new Date(at) })
    console.error(`accepted with ${other} pinned`)
    process.exit(1)
  } catch {}
}
console.log(`ok: jose verified ${verified} ${input.alg} tokens signed by ${kids.size} keys`)
