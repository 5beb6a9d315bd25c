// Package jsclient embeds the built browser client, @sessionledger/client
// (dist/index.js, made from src/ by `npm ci && npm run build`), for Go
// programs that serve it: the browser demo. TestBrowserInChromium checks
// that the committed build is what the source makes.
package jsclient

import _ "embed"

// IndexJS is dist/index.js, an ES module.
//
//go:embed dist/index.js
var IndexJS []byte
