#!/bin/sh
# Backs up a cxnode data directory, while the node runs or not:
#   deploy/scripts/backup.sh DATA_DIR DEST_DIR
#
# What is copied: the journal (the only truth: the sled index and the merged view are rebuilt
# from it at the next start), the audit log with its key, and the CA copy `cxnode verify` uses.
# The journal's segments are copied in order, oldest first, and only ever grow at the end, so
# the copy is a prefix of the log: at worst its last group is cut short, and the node drops an
# unfinished group at start. Everything the node had acknowledged before the copy of its last
# segment began is in the backup. What it acknowledged after is held by its peers: after a
# restore, `cxnode recover --from-peer` brings it back (see docs/OPERATIONS.md).
#
# The backup holds personal data and the audit key: it is written private (umask 077); keep it
# encrypted and off the node's disk.
set -eu

[ $# -eq 2 ] || { echo "usage: backup.sh DATA_DIR DEST_DIR" >&2; exit 2; }
data=$1
dest=$2
[ -f "$data/journal/FORMAT" ] || { echo "backup.sh: $data holds no cxnode journal (no journal/FORMAT)" >&2; exit 1; }
[ ! -e "$dest" ] || { echo "backup.sh: $dest already exists; give a new directory" >&2; exit 1; }
umask 077
mkdir -p "$dest/journal"
cp "$data/journal/FORMAT" "$dest/journal/FORMAT"
# Oldest first: names are seg-<20-digit start position>.cxj, so the glob's (sorted) order is
# log order.
n=0
for path in "$data"/journal/seg-*.cxj; do
    [ -f "$path" ] || continue
    cp "$path" "$dest/journal/${path##*/}"
    n=$((n + 1))
done
[ "$n" -gt 0 ] || { echo "backup.sh: $data/journal holds no segment" >&2; exit 1; }
if [ -d "$data/audit" ]; then
    mkdir -p "$dest/audit"
    cp -p "$data/audit/"* "$dest/audit/"
fi
[ ! -f "$data/federation-ca.pem" ] || cp "$data/federation-ca.pem" "$dest/federation-ca.pem"
sync
echo "backup.sh: $n journal segments of $data copied to $dest"
