#!/usr/bin/env bash
# Consistent online backup of the Levqor database into backups/ (run from anywhere).
#
#   scripts/backup_db.sh              # backups/levqor-YYYY-MM-DD-HHMMSS.db (or .dump on PostgreSQL)
#   scripts/backup_db.sh --dir /srv/backups
#
# Uses `levqor backup` (SQLite's backup API, or pg_dump for PostgreSQL) from the project's .venv or
# the PATH. Without it, a SQLite database is copied with the sqlite3 shell's `.backup`, which is
# just as consistent. Settings come from the environment and .env, as for `levqor serve`.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if [[ -x .venv/bin/levqor ]]; then
  exec .venv/bin/levqor backup "$@"
elif command -v levqor >/dev/null 2>&1; then
  exec levqor backup "$@"
fi

dir="backups"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dir) dir="$2"; shift 2 ;;
    --dir=*) dir="${1#--dir=}"; shift ;;
    *) echo "backup_db.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

from_env_file() {  # the last `NAME=value` of .env, as `levqor` would read it
  [[ -f .env ]] && sed -n "s/^$1=//p" .env | tail -n 1
}
SQLITE_PATH="${SQLITE_PATH:-$(from_env_file SQLITE_PATH || true)}"
LEVQOR_DATABASE_URL="${LEVQOR_DATABASE_URL:-$(from_env_file LEVQOR_DATABASE_URL || true)}"
db="${SQLITE_PATH:-levqor.db}"

if [[ -n "${LEVQOR_DATABASE_URL:-}" ]]; then
  echo "backup_db.sh: PostgreSQL needs levqor (pip install -e .) or: pg_dump --format=custom" >&2
  exit 1
fi
if ! command -v sqlite3 >/dev/null 2>&1; then
  echo "backup_db.sh: neither levqor nor the sqlite3 shell is installed" >&2
  exit 1
fi
if [[ ! -f "$db" ]]; then
  echo "backup_db.sh: there is no SQLite database at $db" >&2
  exit 1
fi

mkdir -p "$dir"
target="$dir/levqor-$(date -u +%Y-%m-%d-%H%M%S).db"
sqlite3 "$db" ".timeout 30000" ".backup '$target.partial'"
sqlite3 "$target.partial" "PRAGMA journal_mode=DELETE;" >/dev/null
verdict="$(sqlite3 "$target.partial" "PRAGMA integrity_check;")"
if [[ "$verdict" != "ok" ]]; then
  rm -f "$target.partial"
  echo "backup_db.sh: the copy failed its integrity check: $verdict" >&2
  exit 1
fi
mv "$target.partial" "$target"
echo "$target"
