# Thin wrapper around CMake. `make test` and `make demo` work on a fresh Debian 12 machine.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=Release

.PHONY: all build deps test demo bench clean

all: build

deps:
	@scripts/deps.sh

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja $(CMAKE_FLAGS)

build: $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

test: deps
	@$(MAKE) --no-print-directory build
	ctest --test-dir $(BUILD) --output-on-failure --timeout 600

demo: deps
	@$(MAKE) --no-print-directory build
	@scripts/demo.sh $(BUILD)

bench: deps
	@$(MAKE) --no-print-directory build
	@scripts/bench.sh $(BUILD)

# Two Debian packages in $(PACKAGE_BUILD)/: wsbridge (the daemon, the tools, the systemd unit
# enabled but not started, /etc/wsbridge/wsbridge.toml; the role groups made by its postinst)
# and libwsbridge-client-dev (the client library, headers, CMake package, pkg-config file).
# Its own build folder: installed under /usr, the configuration under /etc.
PACKAGE_BUILD ?= build-package
.PHONY: package
package: deps
	cmake -S . -B $(PACKAGE_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr \
	  -DWSBRIDGE_CONFIG_DIR=/etc/wsbridge -DWSBRIDGE_BUILD_TESTS=OFF -DWSBRIDGE_BUILD_BENCH=OFF
	cmake --build $(PACKAGE_BUILD) -j $(JOBS)
	cd $(PACKAGE_BUILD) && cpack
	@ls -l $(PACKAGE_BUILD)/*.deb

clean:
	rm -rf $(BUILD)

# ---- Deployment (deploy/): container image, local stack, manifests --------------------------
# Not part of `make test`: `make image` and `make deploy-check` need a Docker engine (Debian's
# docker.io, installed and started when missing) and a few minutes.
#   make image         base image debian:bookworm-slim (debootstrap from the machine's apt mirror
#                      when absent), then deploy/Dockerfile -> $(IMAGE)
#   make deploy-check  the image run for real: upstream, bridge and tail on loopback; /readyz,
#                      messages at the tail, non-root, HEALTHCHECK, SIGTERM; prints size and time
#   make deploy-lint   YAML/TOML/JSON parse, the daemon accepts the configs, nats-server -t (the
#                      JetStream cluster's nats.conf), systemd-analyze verify
IMAGE ?= wsbridge:dev
.PHONY: image deploy-check deploy-lint

image:
	@IMAGE=$(IMAGE) scripts/image.sh

deploy-check: image
	@IMAGE=$(IMAGE) scripts/deploy_check.sh

deploy-lint:
	@IMAGE=$(IMAGE) BUILD=$(BUILD) scripts/deploy_lint.sh

# ---- Reliability: sanitizers and fuzzing (issue 7) ------------------------------------------
# Not part of `make test`; each has its own build folder, so they never disturb $(BUILD).
#   make check-asan  AddressSanitizer + UndefinedBehaviorSanitizer (gcc), whole ctest suite
#   make check-tsan  ThreadSanitizer (gcc), whole ctest suite
#   make fuzz        libFuzzer (clang-14) targets in fuzz/, FUZZ_SECONDS each (default 60)
# Integration tests start the daemon and tools from the same build folder, so those processes
# are sanitized too. Every sanitized process writes its reports to <build>/sanitizer-logs/
# (log_path), including children that a test kills or whose stderr it never shows; the target
# fails when any report was written, and prints them.
SAN_CMAKE_FLAGS = -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g" \
  -DWSBRIDGE_BUILD_BENCH=OFF
ASAN_CFLAGS = -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
TSAN_CFLAGS = -fsanitize=thread -fno-omit-frame-pointer
ASAN_RUN = ASAN_OPTIONS=halt_on_error=1:abort_on_error=0:detect_leaks=1:print_stacktrace=1:strict_init_order=1:detect_stack_use_after_return=0:log_path=$(CURDIR)/build-asan/sanitizer-logs/asan \
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:log_path=$(CURDIR)/build-asan/sanitizer-logs/ubsan \
  LSAN_OPTIONS=suppressions=$(CURDIR)/fuzz/sanitizers/lsan.supp:print_suppressions=0
TSAN_RUN = TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=$(CURDIR)/fuzz/sanitizers/tsan.supp:print_suppressions=0:log_path=$(CURDIR)/build-tsan/sanitizer-logs/tsan
FUZZ_SECONDS ?= 60
.PHONY: check-asan check-tsan fuzz

# $(call san_check,DIR,CFLAGS,ENV,TIMEOUT_SCALE): configure, build, run ctest, then fail on any
# report. Tests run several times slower under a sanitizer: their timeouts are scaled.
define san_check
	cmake -S . -B $(1) $(SAN_CMAKE_FLAGS) -DCMAKE_CXX_FLAGS="$(2)" \
	  -DCMAKE_EXE_LINKER_FLAGS="$(2)" -DCMAKE_SHARED_LINKER_FLAGS="$(2)" \
	  -DWSB_TEST_TIMEOUT_SCALE=$(4)
	cmake --build $(1) -j $(JOBS)
	rm -rf $(1)/sanitizer-logs && mkdir -p $(1)/sanitizer-logs
	@set -e; start=$$(date +%s); rc=0; \
	$(3) ctest --test-dir $(1) --output-on-failure --timeout 1200 || rc=$$?; \
	if ls $(1)/sanitizer-logs/* >/dev/null 2>&1; then \
	  echo "== sanitizer reports ($(1)/sanitizer-logs) =="; \
	  for f in $(1)/sanitizer-logs/*; do echo "--- $$f"; cat "$$f"; done; rc=1; fi; \
	echo "$(1): ctest exit $$rc, $$(( $$(date +%s) - start )) s of tests"; exit $$rc
endef

check-asan: deps
	$(call san_check,build-asan,$(ASAN_CFLAGS),$(ASAN_RUN),2)

check-tsan: deps
	$(call san_check,build-tsan,$(TSAN_CFLAGS),$(TSAN_RUN),4)

fuzz: deps
	@FUZZ_SECONDS=$(FUZZ_SECONDS) JOBS=$(JOBS) fuzz/run.sh build-fuzz

# ---- Soak: crash loop and memory bound (issue 7) --------------------------------------------
# Not part of `make test`; its own build folder (build-soak, Release). tests/soak/soak.cc:
#   crash loop  the daemon under inbound (wsbridge-upstream, SOAK_RATE msg/s) and outbound load
#               (4 producers, acks on), wsbridge-faultproxy switching pass/reset/blackhole/
#               latency on a seeded schedule, SIGKILLed SOAK_KILLS times (default 100) and
#               restarted on the same database; a gap-filling subscriber follows; then checks
#               journal = upstream sequence, every ACCEPTED id upstream in order, the subscriber
#               saw each message once in order, and prints kills, in/out, lost, duplicated, RSS
#   memory      RSS with a 1 000 000-message outbox (accepting and draining) and with a SUB that
#               never reads while SOAK_FLOOD_RATE msg/s flow in (limit SOAK_RSS_MIB, 64)
# SOAK_SEED replays a run (printed first; empty: a random one). SOAK_MODE=all|crash|memory|outbox|flood.
SOAK_BUILD ?= build-soak
SOAK_KILLS ?= 100
SOAK_SEED ?=
SOAK_MODE ?= all
SOAK_RATE ?= 5000
SOAK_FLOOD_RATE ?= 200000
SOAK_RSS_MIB ?= 64
.PHONY: soak

soak: deps
	cmake -S . -B $(SOAK_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release -DWSBRIDGE_BUILD_BENCH=OFF
	cmake --build $(SOAK_BUILD) -j $(JOBS) --target wsbridge-soak
	$(SOAK_BUILD)/tests/wsbridge-soak --mode $(SOAK_MODE) --kills $(SOAK_KILLS) \
	  --rate $(SOAK_RATE) --flood-rate $(SOAK_FLOOD_RATE) --rss-limit-mib $(SOAK_RSS_MIB) \
	  $(if $(SOAK_SEED),--seed $(SOAK_SEED))
