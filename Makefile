# roomproxy: the everyday commands. `make test` is the whole suite.
GO ?= go
FUZZTIME ?= 60s
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: build run test test-go test-e2e vet lint fuzz bench deps ci

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
test: deps vet test-go test-e2e

test-go:
	$(GO) test -race -count=1 -timeout 20m ./...

test-e2e:
	bash e2e/run.sh

lint: vet
	$(GO) run $(STATICCHECK) ./...

# Fuzz the protocol edge for a bounded time, one target at a time.
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzCommandPath$$' -fuzztime $(FUZZTIME) ./proxy
	$(GO) test -run '^$$' -fuzz '^FuzzRoomOf$$' -fuzztime 10s ./policy
	$(GO) test -run '^$$' -fuzz '^FuzzStateFromJSON$$' -fuzztime 10s ./policy

bench:
	bash scripts/deps.sh --bench
	$(GO) test -run '^$$' -bench . -benchmem ./proxy ./backend
	bash bench/run.sh

ci: test fuzz lint
