#!/usr/bin/env bash
# Install what is missing, build with warnings as errors under ASan + UBSan,
# run every test suite, then run each fuzz target for a bounded time.
#   FUZZ_SECONDS=N   seconds per fuzz target (default 30; 0 skips fuzzing)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh test

jobs=$(nproc 2>/dev/null || echo 2)

# meson setup DIR ARGS..., reconfiguring a directory that exists.
setup() {
  local dir=$1
  shift
  if [ -f "$dir/build.ninja" ]; then
    meson setup "$dir" "$@" --reconfigure >/dev/null
  else
    meson setup "$dir" "$@" >/dev/null
  fi
}

# 1. A plain build: the library, tools and examples compile clean.
setup build-release --buildtype=release --werror -Dcluster=enabled
ninja -C build-release -j "$jobs"

# 2. Everything under AddressSanitizer + UndefinedBehaviorSanitizer.
setup build-asan --werror -Db_sanitize=address,undefined -Db_lundef=false -Dcluster=enabled
ninja -C build-asan -j "$jobs"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:strict_string_checks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
status=0
meson test -C build-asan --print-errorlogs --num-processes "$jobs" || status=$?
summary=$(python3 - build-asan/meson-logs/testlog.json <<'PY'
import json, sys
passed = failed = skipped = 0
for line in open(sys.argv[1]):
    r = json.loads(line).get("result")
    if r in ("OK", "EXPECTEDFAIL"):
        passed += 1
    elif r == "SKIP":
        skipped += 1
    else:
        failed += 1
print("tests: %d passed, %d failed, %d skipped" % (passed, failed, skipped))
PY
)
[ "$status" -eq 0 ] || { echo "$summary"; exit "$status"; }

# 3. Fuzz targets (libFuzzer, clang), each for a bounded time on a copy of
#    its seed corpus.
secs=${FUZZ_SECONDS:-30}
if [ "$secs" -gt 0 ]; then
  (export CC=clang; setup build-fuzz -Dfuzzing=true -Db_sanitize=address,undefined \
    -Db_lundef=false -Dtools=disabled -Dexamples=disabled)
  ninja -C build-fuzz -j "$jobs"
  for corpus in test/fuzz/corpus/*/; do
    name=$(basename "$corpus")
    bin=build-fuzz/test/fuzz/fuzz_$name
    [ -x "$bin" ] || continue
    work=$(mktemp -d)
    cp -r "$corpus"/. "$work"/
    echo "fuzzing $name for ${secs}s"
    "$bin" "$work" -max_total_time="$secs" -rss_limit_mb=2048 \
      -malloc_limit_mb=512 -timeout=10 -print_final_stats=0 \
      -artifact_prefix=build-fuzz/ >build-fuzz/fuzz_$name.log 2>&1 \
      || { tail -50 build-fuzz/fuzz_$name.log; echo "fuzz target $name failed"; exit 1; }
    rm -rf "$work"
  done
  echo "fuzzing: all targets ran ${secs}s without a crash"
fi

# The suite's closing line.
echo "$summary"
