#!/usr/bin/env bash
# The nightly job on this machine: the full conformance matrix with a large
# hypothesis budget and JUnit XML, Figure 5, the full fault matrix, then the gate. EXAMPLES=N to change.
set -uo pipefail
cd "$(dirname "$0")"
./setup.sh || exit 1
examples=${EXAMPLES:-500}
status=0
# The tests too long for the default run (marked slow; the default run deselects them).
.venv/bin/python -m pytest -m slow || status=1
for driver in local chirp ftp http webdav sftp xrootd; do
  .venv/bin/python -m pytest conformance --driver "$driver" --server all --examples "$examples" \
    --junitxml "reports/junit-$driver.xml" || status=1
done
# The FUSE file systems users pick instead, on the same servers: Figure 5's mount columns.
for way in "ftp rclone" "sftp rclone" "webdav rclone" "sftp sshfs"; do
  set -- $way
  .venv/bin/python -m pytest conformance --driver "$1" --server all --through mount --mount "$2" \
    --examples "$examples" --junitxml "reports/junit-$1-$2.xml" || status=1
done
# Whether the suite can be trusted: default runs repeated on this checkout, every failure named.
.venv/bin/aviary conformance trust --driver local --driver "chirp --server cctools" \
  --driver "chirp --server aviary" --rounds "${TRUST_ROUNDS:-20}" --hours 6 \
  --log reports/trust.jsonl || status=1
.venv/bin/aviary conformance table >/dev/null || status=1
.venv/bin/aviary faultnet matrix >/dev/null || status=1  # the full fault matrix: reports/faults
.venv/bin/aviary gate || status=1
exit $status
