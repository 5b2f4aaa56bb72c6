#!/bin/sh
# Start an iomtnode node in a container (the image's entrypoint; POSIX sh).
#
# On first start, when the home holds no key and no genesis, it makes the home:
#   iomtnode init --home "$IOMTNODE_HOME" --key-file "$IOMTNODE_KEY_FILE" \
#                 --genesis "$IOMTNODE_GENESIS_FILE"
# (without IOMTNODE_KEY_FILE a new key is made: a node that follows the chain, or an
# authority whose public key is then put in the genesis). Then it replaces itself with
#   iomtnode --log-json run --home "$IOMTNODE_HOME"
# so the node is the container's main process and gets its SIGTERM. Settings come from
# IOMTNODE_<SETTING> variables (e.g. IOMTNODE_ADVERTISE_ADDRESS, IOMTNODE_BOOTNODES), which
# override the home's config.toml; IOMTNODE_BOOTNODES may name this node too (left out).
#
# With arguments it runs the command line instead: `docker run IMAGE genesis card ...`.
set -eu

if [ "$#" -gt 0 ]; then
    exec iomtnode "$@"
fi

home="${IOMTNODE_HOME:-/var/lib/iomtnode/node}"
key_file="${IOMTNODE_KEY_FILE:-}"
genesis="${IOMTNODE_GENESIS_FILE:-}"

fail() {
    echo "iomtnode-entrypoint: $*" >&2
    exit 2
}

if [ ! -e "$home/node_key" ] && [ ! -e "$home/genesis.json" ]; then
    [ -n "$genesis" ] || fail "$home is not a node home yet: set IOMTNODE_GENESIS_FILE to the" \
        "network's genesis.json (and IOMTNODE_KEY_FILE to this node's key) to make it"
    [ -r "$genesis" ] || fail "cannot read IOMTNODE_GENESIS_FILE $genesis"
    if [ -n "$key_file" ]; then
        [ -r "$key_file" ] || fail "cannot read IOMTNODE_KEY_FILE $key_file"
        # init copies the seed into the home's node_key (mode 0600); it reads a Secret's
        # file whatever its mode (Kubernetes' fsGroup makes it readable by the pod's group)
        iomtnode init --home "$home" --key-file "$key_file" --genesis "$genesis" --json
    else
        iomtnode init --home "$home" --genesis "$genesis" --json
    fi
fi

# One list of bootnodes can name every node of a set (a StatefulSet's pods, compose's
# services): a node leaves out its own advertised address rather than dial itself.
if [ -n "${IOMTNODE_BOOTNODES:-}" ] && [ -n "${IOMTNODE_ADVERTISE_ADDRESS:-}" ]; then
    others=""
    set -f  # the addresses are words, never patterns
    old_ifs=$IFS
    IFS=","
    for address in $(printf '%s' "$IOMTNODE_BOOTNODES" | tr -d ' '); do
        if [ -n "$address" ] && [ "$address" != "$IOMTNODE_ADVERTISE_ADDRESS" ]; then
            others="${others:+$others,}$address"
        fi
    done
    IFS=$old_ifs
    set +f
    IOMTNODE_BOOTNODES=$others
    export IOMTNODE_BOOTNODES
fi

exec iomtnode --log-json run --home "$home"
