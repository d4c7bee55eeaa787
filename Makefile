# glancegw: build, test, demo, bench.
#
#   make deps    install what the tests need (Debian packages, Glance + Keystone, Go modules); idempotent
#   make build   bin/glancegw
#   make test    deps + build + gofmt + vet + all tests (unit and black-box against a real Glance)
#   make demo    deps + build + test/demo.sh (real Glance, real ISOs, FUSE mount, NBD)
#   make bench   deps + build + the benchmarks in test/bench
#   make clean
SHELL := /bin/bash
GO ?= go
BIN := bin/glancegw
VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/glancegw/glancegw/hostd.Version=$(VERSION)
TEST_TIMEOUT ?= 18m
APT_PKGS := qemu-utils libnbd-bin nbdkit fuse3 nginx curl python3-openstackclient
APT_OPTIONAL :=

.PHONY: all deps build test fmt-check vet demo bench clean

all: build

deps:
	bash scripts/apt-deps.sh $(APT_PKGS) -- $(APT_OPTIONAL)
	sh test/glance/install.sh
	$(GO) mod download

build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/glancegw

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go'; git ls-files --others --exclude-standard '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

# GLANCEGW_BIN: the black-box tests in test/ use the binary just built.
test: deps build fmt-check vet
	GLANCEGW_BIN=$(CURDIR)/$(BIN) $(GO) test -race -timeout $(TEST_TIMEOUT) ./...

demo: deps build
	GLANCEGW_BIN=$(CURDIR)/$(BIN) bash test/demo.sh

bench: deps build
	GLANCEGW_BENCH=1 GLANCEGW_BIN=$(CURDIR)/$(BIN) $(GO) test -v -run TestBench -timeout 60m ./test/bench

clean:
	rm -rf bin
