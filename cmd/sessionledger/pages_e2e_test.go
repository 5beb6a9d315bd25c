package main

import (
	"net/http"
	"net/url"
	"testing"
)

// TestSessionListingPages: a user's sessions come in pages of limit, oldest
// first, each naming the next one's cursor until the last, and a session
// ended between two pages is left out of the later ones.
func TestSessionListingPages(t *testing.T) {
	h := boot(t, "", nil)
	var ids []string
	for range 5 {
		ids = append(ids, h.issue(`{"user_id":"fleet"}`).ID)
	}
	var got []string
	cursor := ""
	for pages := 1; ; pages++ {
		path := "/v1/users/fleet/sessions?limit=2"
		if cursor != "" {
			path += "&cursor=" + url.QueryEscape(cursor)
		}
		st, body := h.admin("GET", path, "")
		if st != http.StatusOK {
			t.Fatalf("page %d: %d %v", pages, st, body)
		}
		list, _ := body["sessions"].([]any)
		if len(list) > 2 {
			t.Fatalf("page %d holds %d sessions, limit 2", pages, len(list))
		}
		for _, s := range list {
			got = append(got, s.(map[string]any)["session_id"].(string))
		}
		if pages == 1 {
			// The third session ends between the first page and the next.
			h.mustAdmin("DELETE", "/v1/sessions/"+ids[2], "", http.StatusNoContent)
		}
		next, more := body["next_cursor"].(string)
		if !more {
			if pages != 2 {
				t.Fatalf("%d pages, want 2 (2 + 2 sessions, one ended meanwhile)", pages)
			}
			break
		}
		cursor = next
	}
	want := []string{ids[0], ids[1], ids[3], ids[4]}
	if len(got) != len(want) {
		t.Fatalf("listed %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("listed %v, want %v (oldest first)", got, want)
		}
	}
	// Without a limit, one page of at most 100.
	st, body := h.admin("GET", "/v1/users/fleet/sessions", "")
	if list, _ := body["sessions"].([]any); st != http.StatusOK || len(list) != 4 || body["next_cursor"] != nil {
		t.Fatalf("default page: %d %v", st, body)
	}
}
