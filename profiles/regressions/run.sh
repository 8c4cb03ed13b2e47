#!/usr/bin/env bash
# Plants a regression in a copy of the tree and runs the main job on it, to
# show that the job catches it (PERF.md, "The main job beside a neighbour").
#
#   profiles/regressions/run.sh PATCH [RUNS]
#
# The copy is a git worktree of HEAD with PATCH applied, built in
# target/plant (its own target directory, kept between runs and seeded
# from target/release, so only toolplane's crates are built). Each run is `loadgen run smoke`;
# the script prints each run's corrected latency row (p50 p90 p95 p99
# p99.9 p99.99 max) and verdict, and how many passed. A `yes` at nice 19
# runs beside it when NEIGHBOUR=1.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
patch=$(realpath "$1")
runs=${2:-5}
work=$(mktemp -d)
git -C "$root" worktree add -q --detach "$work" HEAD
cleanup() {
    [ -n "${yes_pid:-}" ] && kill "$yes_pid" 2>/dev/null || true
    git -C "$root" worktree remove --force "$work"
}
trap cleanup EXIT
git -C "$work" apply "$patch"
target=${CARGO_TARGET_DIR:-$root/target/plant}
# Seeded from the tree's own build (hard links): the dependencies are
# reused, and only toolplane's crates (at another path) are built again.
if [ ! -d "$target/release" ] && [ -d "$root/target/release" ]; then
    mkdir -p "$target"
    cp -al "$root/target/release" "$target/release"
fi
(cd "$work" && CARGO_TARGET_DIR="$target" cargo build --release -p toolplane-loadgen)
if [ "${NEIGHBOUR:-0}" = 1 ]; then
    nice -n 19 yes >/dev/null &
    yes_pid=$!
fi
passed=0
for i in $(seq 1 "$runs"); do
    if "$target/release/loadgen" run "$root/profiles/smoke.toml" --quiet >"$work/run-$i.txt" 2>&1; then
        passed=$((passed + 1))
    fi
    echo "run $i: $(grep -m1 '^  corrected ' "$work/run-$i.txt" | tr -s ' ')"
    echo "       $(tail -n 1 "$work/run-$i.txt")"
done
echo "$(basename "$patch"): $passed of $runs runs passed"
