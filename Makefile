# Kaon's two entry points: `make devnet` (the main job) and `make test` (what CI runs).
# Both first install the Debian packages the build needs, if any are missing.

SHELL := /bin/bash
# Build cache outside the clone: warm rebuilds stay fast, a cold one still works.
export CARGO_TARGET_DIR ?= /var/tmp/kaon-target
# Link RocksDB from Debian's librocksdb-dev instead of compiling its C++ (~25 min on 2 cores).
MULTIARCH := $(shell gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
export ROCKSDB_LIB_DIR ?= /usr/lib/$(MULTIARCH)
# Silences a harmless Mesa device-select layer message when wgpu enumerates lavapipe.
export NODEVICE_SELECT ?= 1
# clang/libclang: bindgen for librocksdb-sys; librocksdb-dev: the database itself;
# mesa-vulkan-drivers: a CPU Vulkan device (lavapipe) for the GPU kernels' tests.
APT_PACKAGES := clang libclang-dev librocksdb-dev mesa-vulkan-drivers

# The end-to-end test drives the devnet's JSON-RPC with ethers v6 and solc-js (Node.js).
E2E_DIR := tests/e2e

.PHONY: deps e2e-deps build devnet chaos test lint unit bench

deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		sudo=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		echo "installing:" $$missing; \
		$$sudo apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing; \
	fi

e2e-deps:
	@if ! command -v npm >/dev/null 2>&1; then \
		sudo=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		echo "installing: nodejs npm"; \
		$$sudo apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq nodejs npm; \
	fi
	@[ -d $(E2E_DIR)/node_modules/ethers ] || npm ci --prefix $(E2E_DIR) --no-audit --no-fund

build: deps
	cargo build --release --bin kaon

devnet: deps
	cargo run --release --bin kaon -- devnet $(ARGS)

# Fault injection over separate processes (docs/reliability.md); the soak:
# make chaos ARGS="--minutes 60 --seed N".
chaos: deps
	cargo run --release --bin kaon -- chaos $(ARGS)

lint: deps
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

unit: deps e2e-deps
	cargo test --all-targets

test: lint unit

bench: deps
	cargo bench $(ARGS)
