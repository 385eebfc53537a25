# Ventanilla: the two commands of the README are the contract.
#   make demo   runs the four Pacific Alliance access points and exchanges documents on every link
#   make test   runs every test
#   make conformance  runs the conformance suite (conformance/cases) and prints its table
# Both install what a fresh Debian machine lacks first (idempotent).

SHELL := /bin/bash
BUILD_PKGS := pkg-config libxml2-dev libclang-dev libssl-dev
TEST_PKGS  := xmlsec1 postgresql openssl python3 python3-venv chromium chromium-driver
# The demo's legacy IOP partner (conformance/peers/iop) is Python with xmlsec1.
DEMO_PKGS  := xmlsec1 python3
CARGO ?= cargo
# Two cores: keep the test harness parallel but bounded.
TEST_THREADS ?= 2

.PHONY: bench bench-postgres demo demo-deps test conformance crash fuzz deps test-deps build lint fmt clean package

deps:
	@missing=""; for p in $(BUILD_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

test-deps: deps
	@missing=""; for p in $(TEST_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

build: deps
	$(CARGO) build --release --locked

demo-deps: deps
	@missing=""; for p in $(DEMO_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

demo: build demo-deps
	./target/release/ventanilla demo --work target/demo

test: test-deps
	$(CARGO) test --workspace --locked -- --test-threads=$(TEST_THREADS)

# The Debian package (cargo-deb; a production build: no demo, no test kit), then its install
# test: unpacked into a throwaway root, unit checked with systemd-analyze, the installed binary
# started with the installed example config (packaging/test-install.sh).
CARGO_DEB_VERSION ?= 3.8.0
package: deps
	@command -v systemd-analyze >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd; }
	@command -v cargo-deb >/dev/null || $(CARGO) install cargo-deb --locked --version $(CARGO_DEB_VERSION)
	$(CARGO) deb --locked
	$(CARGO) build --locked --quiet -p ventanilla
	./packaging/test-install.sh $$(ls -t target/debian/ventanilla_*.deb | head -1) target/debug/ventanilla

# The conformance suite (conformance/cases): against the self peer (every case, the ones not
# run listed with their reason), then with phase4 (Java 17 + Maven; downloads cached in
# ~/.m2) and the Python `as4` package (pip; cached in ~/.cache/pip) on the other side.
conformance: test-deps
	$(CARGO) build --locked --quiet -p ventanilla -p ventanilla-conformance
	./target/debug/ventanilla conformance run --all
	./target/debug/ventanilla conformance run --peer phase4
	./target/debug/ventanilla conformance run --peer python-as4

# The performance figures of issue 11 (benches/bench.rs): `bench: NAME value UNIT` lines and
# target/bench/results.json. Parts: make bench BENCH="crypto throughput phase4 interop fsync latency soak large".
BENCH ?=
bench: test-deps
	$(CARGO) build --release --locked -p ventanilla
	$(CARGO) bench --locked --bench bench -- $(BENCH)

# The PostgreSQL store's queue counts at PG_MESSAGES stored messages (benches/pg_queue_counts.sh).
PG_MESSAGES ?= 1000000
bench-postgres: test-deps
	benches/pg_queue_counts.sh $(PG_MESSAGES)

# The crash test N times in a row (release build), stopping at the first failure:
#   make crash RUNS=10 CRASH_MESSAGES=600
RUNS ?= 10
crash: test-deps
	@bin=$$($(CARGO) test --release --locked --test crash --no-run 2>&1 | grep -o 'target/release/deps/crash-[0-9a-f]*' | tail -1); \
	test -n "$$bin" || { echo "cannot build the crash test"; exit 1; }; \
	for i in $$(seq 1 $(RUNS)); do \
	  $$bin --nocapture > target/crash-$$i.log 2>&1; rc=$$?; \
	  echo "crash run $$i of $(RUNS): $$(grep -E '^crash test:|panicked' target/crash-$$i.log)"; \
	  if [ $$rc -ne 0 ]; then echo "crash run $$i failed: see target/crash-$$i.log"; exit 1; fi; \
	done

# Every fuzz target for FUZZ_SECONDS each (nightly + cargo-fuzz, installed if missing).
FUZZ_SECONDS ?= 60
fuzz: deps
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	@rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal
	fuzz/campaign.sh $(FUZZ_SECONDS)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	rm -rf target
