package fence_test

import (
	"log"
	"net/http"

	"github.com/dlm/dlm/client"
	"github.com/dlm/dlm/client/fence"
)

// A store accepts a write only from the current holder of the lock the
// writer names: a holder that stalled past its lease gets 409 Conflict
// instead of overwriting its successor's data.
func ExampleChecker_Middleware() {
	r, err := client.NewReader([]string{"http://127.0.0.1:7070"})
	if err != nil {
		log.Fatal(err)
	}
	checker := fence.NewChecker(r)
	store := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		// ... apply the write: the token was current when it was checked,
		// and no other write of the lock runs until this one returns.
	})
	http.Handle("PUT /kv/", checker.Middleware(store))
	log.Fatal(http.ListenAndServe("127.0.0.1:8080", nil))
}
