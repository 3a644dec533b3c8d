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

clean:
	rm -rf $(BUILD)
