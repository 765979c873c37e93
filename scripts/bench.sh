#!/usr/bin/env bash
# Benchmarks: the claim, the webhook loop (with the machine's own ceiling), the member
# import and the server's memory, on SQLite and PostgreSQL. Builds in release mode,
# builds its own load generator (the `phonebank-bench` binary of this crate), and writes
# Markdown tables to the results file. See BENCHMARKS.md.
#
#   scripts/bench.sh                 # full sizes (about 15 minutes on 2 cores)
#   BENCH_QUICK=1 scripts/bench.sh   # small sizes: a smoke run of every part (~2 min)
#
# Environment:
#   BENCH_OUT        results file (default target/bench/results.md)
#   BENCH_ONLY       parts to run, of: roundtrip claim webhooks import (default: all four)
#   BENCH_BACKENDS   of: sqlite postgres (default: both)
#   BENCH_SIZES, BENCH_LEVELS, BENCH_SECONDS, BENCH_OPEN_RATE, BENCH_OPEN_SESSIONS,
#   BENCH_RATES, BENCH_WEBHOOK_MEMBERS, BENCH_VOLUNTEERS, BENCH_IMPORT_ROWS: override sizes
#   TEST_POSTGRES_URL  PostgreSQL admin URL (default postgres://postgres@127.0.0.1:5432/postgres)
#
# Needs PostgreSQL (started with pg_ctlcluster if installed and down), and installs
# sqlite3, psql and GNU time with apt-get if they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${BENCH_QUICK:-0}" = 1 ]; then
    d_sizes=2000,10000; d_levels=1,50,200; d_seconds=2; d_open_rate=300; d_open_sessions=200
    d_rates=200,500; d_wmembers=10000; d_vols=50; d_import=50000
else
    d_sizes=10000,100000,1000000; d_levels=1,50,500,1000; d_seconds=8; d_open_rate=2000
    d_open_sessions=1000; d_rates=500,2000,5000; d_wmembers=1000000; d_vols=200; d_import=1000000
fi
SIZES=${BENCH_SIZES:-$d_sizes}
LEVELS=${BENCH_LEVELS:-$d_levels}
SECS=${BENCH_SECONDS:-$d_seconds}
OPEN_RATE=${BENCH_OPEN_RATE:-$d_open_rate}
OPEN_SESSIONS=${BENCH_OPEN_SESSIONS:-$d_open_sessions}
RATES=${BENCH_RATES:-$d_rates}
WMEMBERS=${BENCH_WEBHOOK_MEMBERS:-$d_wmembers}
VOLS=${BENCH_VOLUNTEERS:-$d_vols}
IMPORT_ROWS=${BENCH_IMPORT_ROWS:-$d_import}
ONLY=${BENCH_ONLY:-roundtrip claim webhooks import}
BACKENDS=${BENCH_BACKENDS:-sqlite postgres}
OUT=${BENCH_OUT:-target/bench/results.md}
PG_ADMIN="${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
PG_BASE="${PG_ADMIN%/*}"

# Tools.
need=()
command -v sqlite3 >/dev/null || need+=(sqlite3)
command -v psql >/dev/null || need+=(postgresql-client)
[ -x /usr/bin/time ] || need+=(time)
command -v python3 >/dev/null || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]}" >&2
    apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
case " $BACKENDS " in *" postgres "*)
    pg_up() { pg_isready -q -d "$PG_ADMIN" 2>/dev/null; }
    if ! pg_up && command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
        for _ in $(seq 1 30); do pg_up && break; sleep 1; done
    fi
    pg_up || { echo "PostgreSQL is not reachable at $PG_ADMIN" >&2; exit 1; }
esac

echo "building (release) ..." >&2
cargo build --release --locked --quiet --bins
bench=target/release/phonebank-bench
work=$(mktemp -d)
cleanup() {
    rm -rf "$work"
    for db in pbbench_rt pbbench_claim pbbench_hooks; do
        psql -X -q -d "$PG_ADMIN" -c "drop database if exists $db with (force)" >/dev/null 2>&1 || true
    done
}
trap cleanup EXIT

fresh_db() { # backend name -> URL of an empty database
    case $1 in
        sqlite) echo "sqlite:$work/$2.db" ;;
        postgres)
            psql -X -q -d "$PG_ADMIN" -c "drop database if exists $2 with (force)" -c "create database $2" >/dev/null
            echo "$PG_BASE/$2" ;;
    esac
}

mkdir -p "$(dirname "$OUT")"
{
    echo "# phonebank benchmark results"
    echo
    echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "- commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src migrations Cargo.toml || echo ' (with uncommitted changes)')"
    echo "- machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/ {print $2}') GiB, Linux $(uname -r)"
    echo "- load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- PostgreSQL: $(psql -X -At -d "$PG_ADMIN" -c 'show server_version' 2>/dev/null || echo n/a); SQLite: bundled with sqlx (WAL; writer synchronous=normal with a WAL fsync before each write is acknowledged, group commit)"
    echo "- sizes: claim members $SIZES, claimers $LEVELS, ${SECS} s per row, open loop ${OPEN_RATE}/s over $OPEN_SESSIONS sessions; webhooks $RATES req/s offered, ${SECS} s each, $VOLS volunteers, $WMEMBERS members; import $IMPORT_ROWS rows"
    echo
} > "$OUT"

for part in $ONLY; do
    case $part in
    roundtrip)
        echo "## Round trips through the driver" >> "$OUT"; echo >> "$OUT"
        for b in $BACKENDS; do
            echo "roundtrip on $b ..." >&2
            $bench roundtrip --db "$(fresh_db "$b" pbbench_rt)" >> "$OUT"
            echo >> "$OUT"
        done ;;
    claim)
        echo "## Claim" >> "$OUT"; echo >> "$OUT"
        for b in $BACKENDS; do
            echo "claim on $b ..." >&2
            $bench claim --db "$(fresh_db "$b" pbbench_claim)" --sizes "$SIZES" --levels "$LEVELS" \
                --seconds "$SECS" --open-rate "$OPEN_RATE" --open-sessions "$OPEN_SESSIONS" >> "$OUT"
            echo >> "$OUT"
        done ;;
    webhooks)
        echo "## Webhooks (volunteer loop over HTTP) and server memory" >> "$OUT"; echo >> "$OUT"
        for b in $BACKENDS; do
            echo "webhooks on $b ..." >&2
            $bench webhooks --db "$(fresh_db "$b" pbbench_hooks)" --members "$WMEMBERS" --rates "$RATES" \
                --seconds "$SECS" --volunteers "$VOLS" --server target/release/phonebank >> "$OUT"
            echo >> "$OUT"
        done ;;
    import)
        echo "import ..." >&2
        echo "## Import" >> "$OUT"; echo >> "$OUT"
        scripts/bench-import.sh "$IMPORT_ROWS" >> "$OUT"
        echo >> "$OUT" ;;
    *) echo "unknown part $part" >&2; exit 2 ;;
    esac
done
echo "results in $OUT" >&2
cat "$OUT"
