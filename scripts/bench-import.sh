#!/usr/bin/env bash
# Import benchmark: 1,000,000 synthetic members into a fresh SQLite file and a fresh
# PostgreSQL database, with wall time and peak RSS, against each engine's raw bulk load
# of the same file (sqlite3 .import into a bare table, PostgreSQL COPY).
#
#   scripts/bench-import.sh [ROWS]
#
# Needs python3, sqlite3, psql and /usr/bin/time; PostgreSQL from TEST_POSTGRES_URL or
# 127.0.0.1:5432. Prints a Markdown table for BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${1:-1000000}"
PG_ADMIN="${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
PG_BASE="${PG_ADMIN%/*}"
work=$(mktemp -d)
trap 'rm -rf "$work"; psql -X -q -d "$PG_ADMIN" -c "drop database if exists pbbench with (force)" >/dev/null 2>&1 || true' EXIT

cargo build --release --locked --quiet
bin=target/release/phonebank
python3 scripts/gen-members.py --rows "$ROWS" > "$work/members.csv"
size=$(du -h "$work/members.csv" | cut -f1)

measure() { # label, command...: prints "seconds peak_mb"
    /usr/bin/time -f "%e %M" -o "$work/time" "$@" > "$work/out" 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
    read -r secs kb < "$work/time"
    echo "$secs $((kb / 1024))"
}

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -r); rows: $ROWS ($size)" >&2

# SQLite
export DATABASE_URL="sqlite:$work/bench.db"
$bin import seats >/dev/null
read -r s_secs s_mb < <(measure $bin import members "$work/members.csv" --json)
s_imported=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["imported"])' "$work/out")
read -r s_raw _ < <(measure sqlite3 "$work/raw.db" ".mode csv" ".import $work/members.csv raw")
read -r s_again _ < <(measure $bin import members "$work/members.csv" --json)

# PostgreSQL
psql -X -q -d "$PG_ADMIN" -c "drop database if exists pbbench with (force)" -c "create database pbbench" >/dev/null
export DATABASE_URL="$PG_BASE/pbbench"
$bin import seats >/dev/null
read -r p_secs p_mb < <(measure $bin import members "$work/members.csv" --json)
p_imported=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["imported"])' "$work/out")
psql -X -q -d "$DATABASE_URL" -c "create table raw (member_id text, name text, phone text, constituency text, membership text)" >/dev/null
read -r p_raw _ < <(measure psql -X -q -d "$DATABASE_URL" -c "\\copy raw from '$work/members.csv' csv header")
read -r p_again _ < <(measure $bin import members "$work/members.csv" --json)

rate() { python3 -c "print(f'{$1 / $2:,.0f}')"; }
ratio() { python3 -c "print(f'{$1 / $2:.1f}x')"; }
cat <<TABLE
| backend | rows imported | time (s) | rows/s | peak RSS (MiB) | raw bulk load (s) | phonebank / raw | re-import, all unchanged (s) |
|---|---|---|---|---|---|---|---|
| SQLite | $s_imported | $s_secs | $(rate "$ROWS" "$s_secs") | $s_mb | $s_raw (sqlite3 .import) | $(ratio "$s_secs" "$s_raw") | $s_again |
| PostgreSQL | $p_imported | $p_secs | $(rate "$ROWS" "$p_secs") | $p_mb | $p_raw (COPY) | $(ratio "$p_secs" "$p_raw") | $p_again |
TABLE
