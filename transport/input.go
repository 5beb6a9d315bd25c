package transport

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"unicode/utf8"
)

// What a request's input must be before any of it is used. Go's decoders
// repair some input silently, and a repaired value is a different value: the
// rules below refuse it instead.

// errNotUTF8 and errLoneSurrogate describe JSON text that Go's decoder would
// accept with every bad sequence replaced by U+FFFD, so that different user
// ids would name one user.
var (
	errNotUTF8       = errors.New("the body is not valid UTF-8 (RFC 8259 §8.1)")
	errLoneSurrogate = errors.New(`the body has a \u escape of a lone UTF-16 surrogate, which is not a character`)
)

// checkJSONText refuses a JSON body that is not valid UTF-8 or that escapes
// a lone surrogate (\ud800 without its pair, or \udc00 alone). The body is
// checked before it is decoded; its syntax is the decoder's to check.
func checkJSONText(b []byte) error {
	if !utf8.Valid(b) {
		return errNotUTF8
	}
	inString := false
	for i := 0; i < len(b); i++ {
		switch c := b[i]; {
		case !inString:
			inString = c == '"'
		case c == '"':
			inString = false
		case c == '\\':
			if i+1 < len(b) && b[i+1] == 'u' {
				r, ok := hex4(b, i+2)
				switch {
				case !ok:
					// Bad syntax: the decoder says where.
				case r >= 0xdc00 && r <= 0xdfff:
					return errLoneSurrogate
				case r >= 0xd800 && r <= 0xdbff:
					// A high surrogate must be followed by \u and a low one.
					low, ok := uint16(0), i+7 < len(b) && b[i+6] == '\\' && b[i+7] == 'u'
					if ok {
						low, ok = hex4(b, i+8)
					}
					if !ok || low < 0xdc00 || low > 0xdfff {
						return errLoneSurrogate
					}
					i += 6 // the low half is consumed with its pair
				}
				i += 5
			} else {
				i++ // the escaped character
			}
		}
	}
	return nil
}

// hex4 reads four hex digits at b[i:].
func hex4(b []byte, i int) (uint16, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	var v uint16
	for _, c := range b[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		v = v<<4 | uint16(c)
	}
	return v, true
}

// jsonKind names the JSON a Go type is decoded from, for error messages: a
// client sent JSON, so it is told which JSON was expected, not a Go type.
func jsonKind(t reflect.Type) string {
	if t == nil {
		return "a JSON value"
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Slice, reflect.Array:
		return "an array"
	}
	return "a JSON value"
}

// tokenWhitespace is the one rule for a token sent in a form parameter
// (refresh_token at the token endpoint; token at revocation and
// introspection): the value must be the token exactly as issued. A token
// with leading or trailing whitespace (a copied line break, a stray space) is
// refused with invalid_request on every endpoint alike, never trimmed on one
// and silently not found on another: a revocation that revoked nothing while
// answering 200 would leave the session live.
func tokenWhitespace(v string) bool {
	return v != "" && (isSpace(v[0]) || isSpace(v[len(v)-1]))
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}

// errDuplicateMember describes an object that names a member twice: Go's
// decoder keeps the last copy, and matches struct fields ignoring case, so
// {"user_id":"alice","USER_ID":"bob"} would be read as bob without a word.
var errDuplicateMember = errors.New("an object names a member twice (member names of the request's own fields are compared ignoring case)")

// checkMembers refuses a JSON body in which an object names a member twice.
// Objects the request decodes into its fields (the body, device, policy)
// compare names ignoring case, as the decoder matches them; the custom
// claims, which keep their names, compare exactly. Syntax errors are left to
// the decoder, which says where they are.
func checkMembers(b []byte) error {
	type frame struct {
		object  bool
		wantKey bool
		fold    bool // compare names ignoring case
		lastKey string
		keys    map[string]struct{}
	}
	var stack []*frame
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	valueDone := func() {
		if n := len(stack); n > 0 && stack[n-1].object {
			stack[n-1].wantKey = true
		}
	}
	for {
		tok, err := dec.Token()
		if err != nil {
			return nil // the end, or bad syntax for the decoder to report
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.object && top.wantKey {
			if key, ok := tok.(string); ok {
				name := key
				if top.fold {
					name = strings.ToLower(key)
				}
				if _, dup := top.keys[name]; dup {
					return errDuplicateMember
				}
				top.keys[name] = struct{}{}
				top.wantKey, top.lastKey = false, key
				continue
			}
		}
		switch tok {
		case json.Delim('{'):
			fold := top == nil || (top.object && top.fold && !strings.EqualFold(top.lastKey, "claims"))
			stack = append(stack, &frame{object: true, wantKey: true, fold: fold, keys: map[string]struct{}{}})
		case json.Delim('['):
			stack = append(stack, &frame{})
		case json.Delim('}'), json.Delim(']'):
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
			valueDone()
		default:
			valueDone()
		}
	}
}
