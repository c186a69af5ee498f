package integration

import (
	"context"
	"slices"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/roomproxy/roomproxy/acl"
	"github.com/roomproxy/roomproxy/internal/testredis"
)

// TestACLMatchAgreesWithRedis: acl.Match, which checks keys and channels
// against PROXY_ACL_FILE's patterns, selects the same keys as redis-server's
// own glob (KEYS, straight to redis-server) for every pattern form.
func TestACLMatchAgreesWithRedis(t *testing.T) {
	r := testredis.Start(t, testredis.Options{})
	c := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer c.Close()
	ctx := context.Background()
	keys := []string{"room:1", "room:12", "room:1:players", "room:", "room", "rooms", "cache:a1", "cache:b2", "cache:c3",
		"h*llo", "hello", "hallo", "hxllo", "a]b", "a-b", "a^b", "[x]", `back\slash`, "", "x?y", "xzy"}
	for _, k := range keys {
		if err := c.Set(ctx, k, "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	patterns := []string{"*", "room:*", "room:?", "room:*:players", "room*", "cache:[ab]?", "cache:[^a]*", "cache:[a-b]*",
		"cache:[b-a]*", `h\*llo`, "h[ae]llo", "h?llo", "a[]]b", `a[\]]b`, "a[-]b", "a[x-]b", "a[^^]b", `\[x\]`, `back\\slash`,
		"x\\?y", "**", "*[", "[", "room:[0-9]*"}
	for _, p := range patterns {
		want, err := c.Keys(ctx, p).Result()
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, k := range keys {
			if acl.Match(p, []byte(k)) {
				got = append(got, k)
			}
		}
		slices.Sort(want)
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("pattern %q: acl.Match selects %q, redis-server %q", p, got, want)
		}
	}
}
