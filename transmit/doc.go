// Package transmit delivers the ledger's events to services that speak only
// HTTP, straight from the stream: signed webhooks (Standard Webhooks) for
// any chosen event types, and Security Event Tokens for receivers of the
// OpenID Shared Signals Framework (CAEP session-revoked and
// credential-change), pushed (RFC 8935) or polled (RFC 8936).
//
// Every endpoint (a webhook or a push stream) is a durable consumer of the
// stream with one message outstanding across every instance: delivery
// resumes where it stopped after any restart, one instance delivers each
// message, in stream order, at least once. A failed attempt is retried with
// capped exponential backoff for a bounded time, then recorded as a failure
// an operator can list and replay. Endpoints, receivers, failures and poll
// positions live in the delivery bucket beside the stream, secrets sealed
// under a key NATS never holds.
package transmit
