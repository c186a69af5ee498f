# roomproxy: the everyday commands. `make test` is the whole suite.
GO ?= go
# Fuzz budgets are execution counts, not durations: a duration -fuzztime races
# Go's fuzz coordinator (golang/go#75804, fixed only in Go 1.27) and fails with
# "context deadline exceeded" and no crasher on a loaded machine. A count has no
# deadline to race; -timeout still bounds the wall clock.
FUZZ_EXECS ?= 300000x
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: build run test test-go test-e2e test-image vet lint fuzz bench deps ci

build:
	$(GO) build -o bin/roomproxy ./cmd/roomproxy

run:
	$(GO) run ./cmd/roomproxy

deps:
	bash scripts/deps.sh

vet:
	$(GO) vet ./...

# The whole test suite, against real servers (installed by deps when missing):
# Go tests with -race, then the real client libraries (ioredis, node-redis,
# socket.io) end to end.
test: deps vet test-go test-e2e test-image

test-go:
	$(GO) test -race -count=1 -timeout 20m ./...

# Three times: batches on the pooled workers (a local Redis's path), on the
# full-duplex streams (a remote upstream's path, such as Upstash's), and with
# debouncing off (every room write goes through at once). Then every client
# over TLS as a users-file user (E2E_SECURE, the tests named "secure").
test-e2e:
	bash e2e/run.sh
	UPSTREAM_STREAM=always bash e2e/run.sh
	DEBOUNCE_WINDOW_MS=0 bash e2e/run.sh
	E2E_SECURE=1 bash e2e/run.sh secure

# The container image's layout and settings, without a Docker engine
# (scripts/image-smoke.sh says what it checks; needs root, else skipped).
test-image:
	bash scripts/image-smoke.sh

lint: vet
	$(GO) run $(STATICCHECK) ./...

# Fuzz the protocol edge for a bounded number of executions, one target at a
# time (about 60 s for FuzzCommandPath, 10 s for each policy target, 5 s for
# acl's FuzzMatch and 20 s for FuzzRoomPath, which needs redis-server, here).
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzCommandPath$$' -fuzztime $(FUZZ_EXECS) -timeout 10m ./proxy
	$(GO) test -run '^$$' -fuzz '^FuzzRoomPath$$' -fuzztime 50000x -timeout 5m ./integration
	$(GO) test -run '^$$' -fuzz '^FuzzMatch$$' -fuzztime 300000x -timeout 5m ./acl
	$(GO) test -run '^$$' -fuzz '^FuzzRoomOf$$' -fuzztime 500000x -timeout 5m ./policy
	$(GO) test -run '^$$' -fuzz '^FuzzStateFromJSON$$' -fuzztime 500000x -timeout 5m ./policy

bench:
	bash scripts/deps.sh --bench
	$(GO) test -run '^$$' -bench . -benchmem ./proxy ./backend
	bash bench/run.sh

ci: test fuzz lint
