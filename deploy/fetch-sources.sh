#!/usr/bin/env bash
# Fetches the source map (which ENI belongs to which workload) that the control plane publishes
# to S3, into the file the rebuilder reads (--sources-file / REBUILDER_SOURCES_FILE). Run by
# rebuilder-sources.timer; the instance role may read that one object.
#
# The new copy replaces the old one with a rename, so the rebuilder never reads half a file, and
# only when the content changed. A failed download keeps the previous map (and exits non-zero, so
# the failure is in the journal of rebuilder-sources.service).
set -euo pipefail
: "${MIRROR_SOURCES_S3_URI:?MIRROR_SOURCES_S3_URI is not set}"
: "${REBUILDER_SOURCES_FILE:?REBUILDER_SOURCES_FILE is not set}"
dest=$REBUILDER_SOURCES_FILE
tmp="$dest.download"
trap 'rm -f "$tmp"' EXIT
aws s3 cp --only-show-errors "$MIRROR_SOURCES_S3_URI" "$tmp"
if [ -f "$dest" ] && cmp -s "$tmp" "$dest"; then
  exit 0
fi
# Readable by the rebuilder's dynamic user; it holds ENI ids and workload names, no secrets.
chmod 0644 "$tmp"
mv -f "$tmp" "$dest"
