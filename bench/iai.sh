#!/usr/bin/env bash
# Instruction counts of the hot-path pieces (benches/iai.rs), compared with
# the checked-in baseline bench/iai-baseline.json.
#
#   bench/iai.sh            run, compare, fail on a regression
#   bench/iai.sh --update   run and write the counts as the new baseline
#
# A regression is more than IAI_THRESHOLD_PCT (default 2) percent more
# instructions (Ir) than the baseline in any benchmark. Counts are exact
# under valgrind, so the threshold only has to absorb differences of
# toolchain and host libraries, not noise. Installs the iai-callgrind-runner
# matching the library version pinned in bench/Cargo.toml when missing.
#
# The baseline holds the counts of CI's build, which compiles the workspace
# with clippy-driver as its rustc wrapper (.ci/run); clippy-driver turns
# MIR optimisations off, which moves the counts by a few percent. Compare
# (or --update) as CI builds:
#   RUSTC_WORKSPACE_WRAPPER=clippy-driver \
#   CLIPPY_ARGS=-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__ bench/iai.sh
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(sed -n 's/^iai-callgrind = "=\(.*\)"/\1/p' bench/Cargo.toml)
if [[ -z "$version" ]]; then
    echo "iai.sh: bench/Cargo.toml does not pin iai-callgrind (iai-callgrind = \"=X.Y.Z\")" >&2
    exit 2
fi
if ! command -v valgrind >/dev/null; then
    echo "iai.sh: valgrind is not installed (apt-get install valgrind)" >&2
    exit 2
fi
if [[ "$(iai-callgrind-runner --version 2>/dev/null | awk '{print $2}')" != "$version" ]]; then
    cargo install iai-callgrind-runner --version "$version" --locked
fi

threshold=${IAI_THRESHOLD_PCT:-2}
target=${CARGO_TARGET_DIR:-target}
rm -rf "$target/iai/toolplane-bench"
# --workspace keeps the features the rest of the build resolved, and the
# release profile its artifacts (the bench profile, though the same
# settings, would compile wasmtime a second time).
cargo bench --workspace --profile release --bench iai -- --save-summary=json

python3 - "$target/iai/toolplane-bench" bench/iai-baseline.json "$threshold" "${1:-}" <<'PY'
import json, pathlib, sys

root, baseline_path, threshold, mode = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), float(sys.argv[3]), sys.argv[4]

def ir(summary):
    # The callgrind Ir of the benchmark's (only) run: the "new" value.
    for profile in summary["profiles"]:
        total = profile["summaries"]["total"]["summary"]
        metrics = total.get("Callgrind") or total
        ir = metrics["Ir"]["metrics"]
        value = ir.get("Left") or ir.get("Both", [None])[0]
        if isinstance(value, dict):
            value = value.get("Int", value.get("Float"))
        return int(value)
    raise SystemExit(f"iai.sh: no callgrind profile in {summary}")

counts = {}
for path in sorted(root.rglob("summary.json")):
    s = json.loads(path.read_text())
    name = f'{s["module_path"]}.{s["id"]}' if s.get("id") else s["module_path"]
    counts[name] = ir(s)
if not counts:
    raise SystemExit(f"iai.sh: no summary.json under {root}: did the benches run?")

if mode == "--update":
    baseline_path.write_text(json.dumps(counts, indent=2, sort_keys=True) + "\n")
    print(f"iai.sh: wrote {len(counts)} counts to {baseline_path}")
    sys.exit(0)

baseline = json.loads(baseline_path.read_text())
failed = False
print(f"\n| benchmark | baseline Ir | now Ir | change |\n|---|---|---|---|")
for name, now in counts.items():
    base = baseline.get(name)
    if base is None:
        print(f"| {name} | – | {now} | new: add it with bench/iai.sh --update |")
        failed = True
        continue
    change = (now - base) / base * 100
    flag = " **regression**" if change > threshold else ""
    failed |= change > threshold
    print(f"| {name} | {base} | {now} | {change:+.2f}%{flag} |")
for name in baseline.keys() - counts.keys():
    print(f"| {name} | {baseline[name]} | – | missing: did a benchmark disappear? |")
    failed = True
if failed:
    raise SystemExit(f"iai.sh: instruction counts over the baseline by more than {threshold}% (or a benchmark new or missing)")
print(f"\niai.sh: every count within {threshold}% of the baseline")
PY
