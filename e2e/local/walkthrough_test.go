package local

import (
	"encoding/json"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/tollgate-dev/tollgate/internal/testenv"
)

// TestWalkthroughWithCurl runs the README's walkthrough with curl itself,
// command by command, on a fresh stack: the same arguments, the same
// files (testdata/user.json and book1.json), only the gateway's address
// differs. It pins what a reader sees: the book is /books/1, deleting it
// twice is 204 then 404, and the admin's user list has no hashes.
func TestWalkthroughWithCurl(t *testing.T) {
	curl := testenv.LookPath(t, "curl", "apt-get install curl")
	st := startStack(t, nil)
	host := strings.TrimPrefix(st.GatewayURL(), "http://")
	base := "http://" + host
	u := readUser(t)
	adminName, _ := st.Admin()
	adminPassword, err := os.ReadFile(st.AdminPasswordFile())
	if err != nil {
		t.Fatal(err)
	}

	// run runs curl in testdata (for -d @file) and returns the status and
	// body it printed.
	run := func(t *testing.T, args ...string) (int, string) {
		t.Helper()
		args = append(args, "-w", "\n%{http_code}")
		cmd := exec.CommandContext(t.Context(), curl, args...)
		cmd.Dir = "testdata"
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("curl %s: %v", strings.Join(args, " "), err)
		}
		s := string(out)
		i := strings.LastIndexByte(s, '\n')
		status, err := strconv.Atoi(s[i+1:])
		if err != nil {
			t.Fatalf("curl %s: no status in %q", strings.Join(args, " "), s)
		}
		return status, s[:i]
	}
	expect := func(t *testing.T, want int, args ...string) string {
		t.Helper()
		status, body := run(t, args...)
		if status != want {
			t.Fatalf("curl %s = %d, want %d; body: %s", strings.Join(args, " "), status, want, body)
		}
		return body
	}
	token := func(t *testing.T, body string) string {
		t.Helper()
		var r struct {
			Token string `json:"token"`
		}
		if err := json.Unmarshal([]byte(body), &r); err != nil || r.Token == "" {
			t.Fatalf("login answered %q, want a token", body)
		}
		return r.Token
	}

	body := expect(t, 201, "-s", "-X", "POST", base+"/register", "-H", "Content-Type: application/json", "-d", "@user.json")
	if !strings.Contains(body, `"registered successfully"`) || !strings.Contains(body, `"name":"`+u.Name+`"`) {
		t.Errorf("register answered %s, want the registered user", body)
	}
	userToken := token(t, expect(t, 200, "-s", "-X", "POST", "http://"+u.Name+":"+u.Password+"@"+host+"/login"))
	// The tutorial's own command, a GET.
	token(t, expect(t, 200, "-s", "http://"+u.Name+":"+u.Password+"@"+host+"/login"))
	tok := "x-access-tokens: " + userToken

	body = expect(t, 201, "-s", "-X", "POST", base+"/book", "-H", tok, "-H", "Content-Type: application/json", "-d", "@book1.json")
	if !strings.HasPrefix(body, `{"id":1,"name":"The Hobbit","author":"J. R. R. Tolkien","publisher":"George Allen \u0026 Unwin","book_prize":12,`) {
		t.Errorf("POST /book answered %s, want book 1 as book1.json has it", body)
	}
	body = expect(t, 200, "-s", base+"/books", "-H", tok)
	if !strings.HasPrefix(body, `{"list_of_books":[{"id":1,"name":"The Hobbit",`) {
		t.Errorf("GET /books answered %s, want book 1 listed", body)
	}
	expect(t, 401, "-s", base+"/books")
	expect(t, 401, "-s", base+"/users")
	expect(t, 403, "-s", base+"/users", "-H", tok)
	expect(t, 204, "-s", "-X", "DELETE", base+"/books/1", "-H", tok)
	expect(t, 404, "-s", "-X", "DELETE", base+"/books/1", "-H", tok)

	pw := strings.TrimSpace(string(adminPassword))
	adminToken := token(t, expect(t, 200, "-s", "-X", "POST", "http://"+adminName+":"+pw+"@"+host+"/login"))
	body = expect(t, 200, "-s", base+"/users", "-H", "Authorization: Bearer "+adminToken)
	var list struct {
		Users []map[string]any `json:"users"`
	}
	if err := json.Unmarshal([]byte(body), &list); err != nil || len(list.Users) != 2 {
		t.Fatalf("GET /users as admin answered %s, want the admin and %s", body, u.Name)
	}
	for _, user := range list.Users {
		for k := range user {
			if k != "id" && k != "name" && k != "roles" && k != "created_at" {
				t.Errorf("GET /users shows the field %q: %s", k, body)
			}
		}
	}
	if strings.Contains(body, "$argon2") {
		t.Errorf("GET /users shows a password hash: %s", body)
	}
}
