#!/usr/bin/env bash
# `make fuzz`: builds the libFuzzer targets (clang-14, -fsanitize=fuzzer,address,undefined) in
# BUILD_DIR (default build-fuzz) and runs each for FUZZ_SECONDS (default 60), starting from the
# seed corpus in fuzz/corpus/<target>/. New inputs go to BUILD_DIR/corpus/<target>/ (the repo's
# seeds are never modified); a crash is saved in BUILD_DIR/artifacts/<target>/ and fails the run.
# Prints, per target: executions, exec/s, coverage (cov: edges, ft: features, from libFuzzer's
# final status line) and corpus size.
#   FUZZ_TARGETS="fuzz_frame fuzz_config" make fuzz FUZZ_SECONDS=300   runs a subset, longer
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build-fuzz}
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
JOBS=${JOBS:-$(nproc)}
TARGETS=(${FUZZ_TARGETS:-fuzz_frame fuzz_frame_protocol fuzz_send_request fuzz_replay_request fuzz_config})

# libFuzzer ships in libclang-rt-14-dev (Debian's clang-14 alone has no libFuzzer runtime).
missing=()
for p in clang-14 libclang-rt-14-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  echo "fuzz: installing ${missing[*]}"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
    --no-install-recommends "${missing[@]}" >/tmp/wsbridge-fuzz-deps.log 2>&1
fi

# Every library is instrumented for coverage (fuzzer-no-link) and the sanitizers; the targets
# link libFuzzer's main (fuzz/CMakeLists.txt).
SAN="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined"
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g" \
  -DCMAKE_CXX_COMPILER=clang++-14 -DCMAKE_CXX_FLAGS="$SAN -fno-omit-frame-pointer" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" \
  -DWSBRIDGE_BUILD_FUZZ=ON -DWSBRIDGE_BUILD_TESTS=OFF -DWSBRIDGE_BUILD_BENCH=OFF >/dev/null
cmake --build "$BUILD_DIR" -j "$JOBS" --target "${TARGETS[@]}"

export ASAN_OPTIONS=${ASAN_OPTIONS:-halt_on_error=1:detect_leaks=1:print_stacktrace=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
status=0
summary=()
for t in "${TARGETS[@]}"; do
  corpus="$BUILD_DIR/corpus/$t"
  artifacts="$BUILD_DIR/artifacts/$t"
  log="$BUILD_DIR/$t.log"
  mkdir -p "$corpus" "$artifacts"
  dict=()
  [ -f "fuzz/dict/$t.dict" ] && dict=(-dict="fuzz/dict/$t.dict")
  echo "== $t: ${FUZZ_SECONDS}s (log: $log)"
  rc=0
  "$BUILD_DIR/fuzz/$t" "$corpus" "fuzz/corpus/$t" "${dict[@]}" -max_total_time="$FUZZ_SECONDS" \
    -max_len=8192 -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" >"$log" 2>&1 || rc=$?
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$done_line")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$done_line")
  corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p' <<<"$done_line")
  if [ "$rc" -ne 0 ]; then
    status=1
    echo "!! $t failed (exit $rc); crash input in $artifacts/:"
    ls -l "$artifacts" || true
    grep -E 'ERROR|SUMMARY|runtime error|==[0-9]+==' "$log" | head -20 || true
    summary+=("$(printf '%-20s FAILED (exit %s), see %s' "$t" "$rc" "$log")")
  else
    summary+=("$(printf '%-20s %12s execs %8s exec/s   cov %6s   ft %7s   corpus %s' \
      "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}")")
  fi
done
echo
echo "fuzz summary (${FUZZ_SECONDS}s per target):"
printf '  %s\n' "${summary[@]}"
exit $status
