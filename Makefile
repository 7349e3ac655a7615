# Makefile - the human entry point. `make run` and `make test` work on a fresh Debian
# machine as root: they install the build's Debian packages when missing, configure with
# CMake, build, then run. Everything real lives in CMakeLists.txt.

BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_ARGS ?=

# Debian packages the build and the test suite need (checked one by one, installed only if missing).
DEB_PACKAGES = cmake make gcc pkg-config libjansson-dev libzstd-dev
DEB_PACKAGES += $(shell cat packages.d/*.txt 2>/dev/null | grep -v '^\#')

NEOX = $(BUILD)/neox

.PHONY: all deps build build-asan test test-fast test-asan run clean fuzz help minipile

all: build

help:
	@echo "make run    - build, then generate from the embedded default model and inspect it"
	@echo "make test   - build and run the whole test suite twice (normal, then ASan+UBSan)"
	@echo "make build  - configure and build into $(BUILD)/"
	@echo "make fuzz   - build the libFuzzer targets with clang into build-fuzz/"
	@echo "make minipile - build the Debian-text Pile-like corpus into $(BUILD)/minipile/"

deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null \
	    || { echo "apt-get install failed"; exit 1; }; \
	fi

$(BUILD)/CMakeCache.txt: | deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_ARGS)

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

$(ASAN_BUILD)/CMakeCache.txt: | deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DNX_SANITIZE=ON $(CMAKE_ARGS)

build-asan: deps $(ASAN_BUILD)/CMakeCache.txt
	cmake --build $(ASAN_BUILD) -j $(JOBS)

test-fast: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

test-asan: build-asan
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  NX_SANITIZED=1 ctest --output-on-failure -j $(JOBS) -LE 'slow|emulated'

test: test-fast test-asan
	@echo "make test: normal and ASan+UBSan suites passed"

run: build
	@sh tools/run_default.sh $(NEOX)

fuzz: deps
	@command -v clang >/dev/null || { apt-get install -y -qq clang >/dev/null; }
	CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DNX_FUZZ=ON
	cmake --build build-fuzz -j $(JOBS)
	@echo "run e.g.: build-fuzz/fuzz_safetensors -max_total_time=600 tests/fuzz/corpus/fuzz_safetensors"

# A 20-100 MB Pile-like corpus from Debian package text (data/minipile.json, docs/DATA.md).
NEOX_ASSETS ?= $(CURDIR)/../shared/assets
minipile: build
	@$(MAKE) --no-print-directory deps DEB_PACKAGES="$$(grep -v '^#' packages.d/minipile.list)"
	sh data/stage_minipile.sh $(BUILD)/minipile-stage
	NEOX_MINIPILE_STAGE=$(abspath $(BUILD)/minipile-stage) $(NEOX) data build data/minipile.json -o $(BUILD)/minipile \
	  -t $(NEOX_ASSETS)/tokenizers/gpt-neox-20b/tokenizer.json

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) build-fuzz
