#!/usr/bin/env bash
# Run the whole test suite on SQLite and PostgreSQL.
#
# PostgreSQL: uses TEST_POSTGRES_URL if set; otherwise the local server on
# 127.0.0.1:5432 (user postgres, trust auth), started with pg_ctlcluster if it is down.
# Every PostgreSQL test creates its own database named pbtest_<random>; they are
# dropped before and after the run. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

export TEST_POSTGRES_URL="${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
# Fail rather than skip the PostgreSQL leg when it is not reachable.
export PHONEBANK_REQUIRE_POSTGRES=1

pg_up() { pg_isready -q -d "$TEST_POSTGRES_URL" 2>/dev/null; }
if ! pg_up; then
    if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
        echo "starting PostgreSQL" >&2
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
        for _ in $(seq 1 30); do pg_up && break; sleep 1; done
    fi
fi
pg_up || { echo "PostgreSQL is not reachable at $TEST_POSTGRES_URL" >&2; exit 1; }

# This run's databases are pbtest_<run>_...; at the end only those are dropped, so two
# runs on one server (two engineers, two CI jobs) never pull databases from under each
# other. The run id starts with its start time: leftovers of crashed runs more than six
# hours old are dropped at the start (and unnamed ones of plain `cargo test` runs when
# nobody is connected to them).
export PHONEBANK_TEST_RUN="${PHONEBANK_TEST_RUN:-$(date +%s)x$$}"
drop_databases() {
    psql -X -q -d "$TEST_POSTGRES_URL" -Atc "$1" |
        while read -r db; do psql -X -q -d "$TEST_POSTGRES_URL" -c "drop database if exists \"$db\" with (force)" >/dev/null; done
}
stale=$(( $(date +%s) - 6 * 3600 ))
drop_databases "select datname from pg_database d where datname like 'pbtest\_%' and (
    (case when datname ~ '^pbtest_[0-9]+x[0-9]+_'
          then split_part(split_part(datname, '_', 2), 'x', 1)::bigint < $stale else false end)
    or (datname ~ '^pbtest_[0-9a-f]+$' and not exists (select 1 from pg_stat_activity a where a.datname = d.datname)))"
cleanup() {
    drop_databases "select datname from pg_database where datname like 'pbtest\_${PHONEBANK_TEST_RUN}\_%'"
    # SQLite test files live under cargo's target/tmp (tests/common::test_dir).
    rm -rf target/tmp/pbtest
}
trap cleanup EXIT

cargo test --locked "$@"
