#!/usr/bin/env bash
# Nightly backup of a document store into a Holdfast repository.
# Exit code 3 (some files unreadable) is reported but does not fail the job;
# anything else non-zero does.
set -uo pipefail
export HOLDFAST_REPOSITORY=${HOLDFAST_REPOSITORY:-/srv/backups/holdfast}
export HOLDFAST_PASSWORD_FILE=${HOLDFAST_PASSWORD_FILE:-/etc/holdfast/password}

holdfast backup /srv/documents --source documents --tag nightly --quiet
rc=$?
if [ $rc -eq 3 ]; then
  echo "backup finished with unreadable files (see warnings above)" >&2
elif [ $rc -ne 0 ]; then
  exit $rc
fi
# Sundays: verify a tenth of the stored data.
if [ "$(date +%u)" = 7 ]; then
  holdfast check --read-data-subset 10 --quiet || exit $?
fi
