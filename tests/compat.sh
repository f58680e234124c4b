#!/usr/bin/env bash
# The producer writes Celery's task message itself (tasks/publish.py): check it against every
# Celery/kombu/redis-py line that pyproject.toml allows, each in a virtualenv of its own, with
# tests/test_inline_publish.py. Needs the package index; a few minutes. `make test-compat`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${COMPAT_DIR:-$root/build/compat}
python=${PYTHON:-python3}
combos=(
  "celery[redis]==5.4.0 kombu==5.3.7 redis==5.2.1"
  "celery[redis]==5.4.0 kombu==5.4.2 redis==5.2.1"
  "celery[redis]==5.5.3 kombu==5.5.4 redis==5.2.1"
  "celery[redis]==5.6.3 kombu==5.6.2 redis==6.4.0"
  "celery[redis]==5.7.0 kombu==5.7.0 redis==6.4.0"
)
rm -rf "$work" && mkdir -p "$work/run"
cp -r "$root/tests" "$work/run/"  # outside the checkout, so `followup` is the installed one
failed=0
for n in "${!combos[@]}"; do
  venv="$work/venv-$n"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet "$root[simulator]" pytest pytest-timeout
  # shellcheck disable=SC2086  # one combo is several requirements
  "$venv/bin/pip" install --quiet ${combos[$n]}
  echo "== ${combos[$n]}"
  if ! (cd "$work/run" && "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/test_inline_publish.py); then
    failed=1
  fi
done
exit $failed
