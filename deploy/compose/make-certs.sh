#!/bin/sh
# Makes the certificates of the compose federation (compose.yaml). Run it before the first
# `docker compose up` / `podman compose up`, from anywhere:
#
#   deploy/compose/make-certs.sh          create what is missing, then hand out ca.pem + crl.pem
#   deploy/compose/make-certs.sh crl      re-sign the CRL (valid 7 days) and hand it out again;
#                                         run at least weekly (cron) and after every revocation
#
# What it writes (all of it is secret or generated: never commit it; .gitignore keeps it out):
#   ca/                   the federation CA: ca.pem, ca.key, crl.pem, issued.json, revoked.json.
#                         Never mounted into a container; only this script uses it.
#   certs/<region>/       ca.pem, crl.pem, node.pem, node.key for node-<region>, mounted
#                         read-only at /etc/cxnode/certs. One directory per node, so no node
#                         can read another node's key.
#   certs/publishers/     ca.pem and publisher-<region>.pem/.key, for `cxnode publish` on the host.
#
# Node certificates name the compose service (node-<region>: how the nodes will reach each other
# on the compose network) plus localhost and 127.0.0.1 (the published ports on this host).
#
# Needs a cxnode binary: $CXNODE, else `cxnode` on PATH, else ../../target/release/cxnode, else
# it runs cxnode from the image. It always needs the image (default localhost/cxnode:latest,
# override with CX_IMAGE) and a container engine (CX_ENGINE=docker|podman, default: whichever
# is installed, docker first) to give each node.key to the container's user, uid 10001.
#
# Start over: stop the federation, then `rm -rf ca certs` (and `docker compose down -v` to drop
# the data volumes, whose logs were signed by the old keys).

set -eu

REGIONS="330000 320000 310000"
# The uid:gid the image runs as (see deploy/container/Containerfile).
NODE_OWNER="10001:10001"

cd "$(dirname "$0")"
IMAGE=${CX_IMAGE:-localhost/cxnode:latest}

die() {
    echo "make-certs.sh: $*" >&2
    exit 1
}

# --- container engine ----------------------------------------------------------------------------
ENGINE=${CX_ENGINE:-}
if [ -z "$ENGINE" ]; then
    if command -v docker >/dev/null 2>&1; then
        ENGINE=docker
    elif command -v podman >/dev/null 2>&1; then
        ENGINE=podman
    else
        die "no container engine found (install docker or podman, or set CX_ENGINE)"
    fi
fi
"$ENGINE" image inspect "$IMAGE" >/dev/null 2>&1 \
    || die "image $IMAGE not found in $ENGINE; build it first, from the repository root:
  $ENGINE build -f deploy/container/Containerfile -t $IMAGE ."

# Options that make a container write files owned by the invoking user, whatever the engine's
# user-namespace setup (rootless engines map the host user to root inside the container).
me_in_container() {
    case "$ENGINE" in
    *podman*)
        if [ "$("$ENGINE" info --format '{{.Host.Security.Rootless}}' 2>/dev/null)" = true ]; then
            echo "--userns=keep-id"
        else
            echo "--user $(id -u):$(id -g)"
        fi
        ;;
    *)
        if "$ENGINE" info --format '{{.SecurityOptions}}' 2>/dev/null | grep -q rootless; then
            echo "--user 0:0"
        else
            echo "--user $(id -u):$(id -g)"
        fi
        ;;
    esac
}

# --- cxnode binary ---------------------------------------------------------------------------
CXBIN=${CXNODE:-}
if [ -z "$CXBIN" ]; then
    if command -v cxnode >/dev/null 2>&1; then
        CXBIN=$(command -v cxnode)
    elif [ -x ../../target/release/cxnode ]; then
        CXBIN=../../target/release/cxnode
    fi
fi

cx() {
    if [ -n "$CXBIN" ]; then
        "$CXBIN" "$@"
    else
        # No local binary: run the image's. No network needed; this directory is /work.
        # shellcheck disable=SC2046 # the user options are meant to split into words
        "$ENGINE" run --rm --network none $(me_in_container) -v "$PWD:/work:z" -w /work \
            --entrypoint cxnode "$IMAGE" "$@"
    fi
}

# Copies a public file into place atomically: a running node re-reads crl.pem when it changes
# and must never see half a file.
put() {
    cp "$1" "$2.tmp"
    chmod 0644 "$2.tmp"
    mv -f "$2.tmp" "$2"
}

# Hands a node key to the container's user (uid 10001), keeping it 0600: the node can read it,
# nobody else on the host can (except root). Done inside a throwaway container because only
# there does uid 10001 mean the same as in the node containers (rootless engines remap uids).
hand_over_key() {
    "$ENGINE" run --rm --network none --user 0:0 -v "$PWD/$1:/certs:z" \
        --entrypoint chown "$IMAGE" "$NODE_OWNER" /certs/node.key
}

distribute() {
    for r in $REGIONS; do
        put ca/ca.pem "certs/$r/ca.pem"
        put ca/crl.pem "certs/$r/crl.pem"
    done
    put ca/ca.pem certs/publishers/ca.pem
}

case "${1:-all}" in
all)
    if [ ! -f ca/ca.key ]; then
        cx certs init --dir ca --name "cxnode compose federation CA"
    fi
    # cxnode writes every key 0600. The CA directory and the publishers' directory stay private
    # to this user; the node directories must be readable by the containers' user.
    chmod 0700 ca
    mkdir -p certs/publishers
    chmod 0700 certs/publishers
    for r in $REGIONS; do
        d="certs/$r"
        # `compose up` before this script makes empty, root-owned directories for the mounts.
        if [ -d "$d" ] && [ ! -w "$d" ]; then
            die "$(pwd)/$d is not writable (made by compose before the certificates existed?); remove it and run again"
        fi
        mkdir -p "$d"
        # The node containers must be able to enter their directory.
        chmod 0755 certs "$d"
        if [ ! -f "$d/node.pem" ]; then
            cx certs issue --ca-dir ca --kind node --region "$r" --name node --out "$d" \
                --dns "node-$r" --dns localhost --ip 127.0.0.1
        fi
        # Public, and read by the node's user (whatever this shell's umask).
        chmod 0644 "$d/node.pem"
        # Still readable by us means not yet handed over (also repairs an interrupted run).
        if [ -r "$d/node.key" ]; then
            hand_over_key "$d"
        fi
        if [ ! -f "certs/publishers/publisher-$r.pem" ]; then
            cx certs issue --ca-dir ca --kind publisher --region "$r" --out certs/publishers
        fi
    done
    distribute
    echo "certificates ready in $(pwd)/certs (CA in $(pwd)/ca); next: docker compose up -d"
    ;;
crl)
    [ -f ca/ca.key ] || die "no CA in $(pwd)/ca; run make-certs.sh without arguments first"
    cx certs crl --ca-dir ca
    distribute
    echo "CRL re-published to every node (they reload it within crl_reload_seconds)"
    ;;
*)
    die "usage: make-certs.sh [all|crl]"
    ;;
esac
