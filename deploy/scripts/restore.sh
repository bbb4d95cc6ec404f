#!/bin/sh
# Restores a backup made by backup.sh into a node's (new, empty) data directory:
#   deploy/scripts/restore.sh BACKUP_DIR DATA_DIR
# Then start the node: it rebuilds its index and merged view from the journal before it serves.
# If the node had published after the backup was taken, stop it again and bring its own log
# back from a peer first: cxnode recover --config node.toml --from-peer PEER:7443
set -eu

[ $# -eq 2 ] || { echo "usage: restore.sh BACKUP_DIR DATA_DIR" >&2; exit 2; }
backup=$1
data=$2
[ -f "$backup/journal/FORMAT" ] || { echo "restore.sh: $backup is not a backup made by backup.sh (no journal/FORMAT)" >&2; exit 1; }
if [ -e "$data" ] && [ -n "$(ls -A "$data" 2>/dev/null)" ]; then
    echo "restore.sh: $data is not empty; move it away first (a restore never mixes two stores)" >&2
    exit 1
fi
umask 077
mkdir -p "$data"
cp -rp "$backup/journal" "$data/journal"
[ ! -d "$backup/audit" ] || cp -rp "$backup/audit" "$data/audit"
[ ! -f "$backup/federation-ca.pem" ] || cp -p "$backup/federation-ca.pem" "$data/federation-ca.pem"
sync
echo "restore.sh: restored $backup into $data; start the node to rebuild its indexes"
