#!/usr/bin/env bash
# Builds and runs the libFuzzer target for the value codec (clang's libFuzzer through
# swiftc -sanitize=fuzzer). Usage: Fuzz/run.sh [seconds]   (default 60)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
out=.build-fuzz
mkdir -p "$out/corpus"
cp Fixtures/fuzz/value/* "$out/corpus/"
swiftc -O -parse-as-library -sanitize=fuzzer,address -module-name TopGunCoreFuzz \
  $(find Sources/TopGunCore -name '*.swift') Fuzz/ValueFuzz.swift -o "$out/value-fuzz"
"$out/value-fuzz" -max_total_time="$seconds" -max_len=4096 "$out/corpus"
