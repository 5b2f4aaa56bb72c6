#!/bin/sh
# The genesis ceremony of a demo network whose authorities all run on one host (compose's
# `ceremony` service runs it once, in the node image, before the nodes start). A real
# network runs the same steps on each authority's own host and shares only the public
# cards and the genesis (docs/network.md); here one container does all of them.
#
# Under $CEREMONY_ROOT (default /var/lib/iomtnode, a volume) it makes, for each name in
# $NODES, the home NAME/node (a key, no genesis yet) and its card with the address
# NAME:$P2P_PORT; then ceremony/genesis.json from the cards; then installs it in every home
# (each checks it holds its own key, sets its bootnodes to the others and advertises its
# card's address). Run again on a finished ceremony it checks the genesis and changes nothing.
set -eu

root="${CEREMONY_ROOT:-/var/lib/iomtnode}"
nodes="${NODES:-node1 node2 node3 node4}"
chain_id="${CHAIN_ID:-iomt-demo}"
port="${P2P_PORT:-7546}"
out="$root/ceremony"
genesis="$out/genesis.json"

cards=""
for name in $nodes; do
    cards="$cards --card $out/$name.card.json"
done

if [ -e "$genesis" ]; then
    for name in $nodes; do
        # shellcheck disable=SC2086 # $cards is a list of options, split on purpose
        iomtnode genesis verify "$genesis" --home "$root/$name/node" $cards >/dev/null
    done
    echo "ceremony: $genesis was made before and every home holds it"
    exit 0
fi
if [ -e "$out" ]; then
    echo "ceremony: $out is left from an unfinished ceremony; start over with an empty" \
         "volume (docker compose down --volumes)" >&2
    exit 2
fi

mkdir -p "$out"
for name in $nodes; do
    iomtnode init --home "$root/$name/node" --no-genesis --json
    iomtnode genesis card --home "$root/$name/node" --chain-id "$chain_id" --address "$name:$port" --name "$name" \
        --out "$out/$name.card.json"
done
# shellcheck disable=SC2086 # $cards is a list of options, split on purpose
iomtnode genesis new --chain-id "$chain_id" $cards --out "$genesis.partial"
for name in $nodes; do
    # shellcheck disable=SC2086
    iomtnode genesis verify "$genesis.partial" --home "$root/$name/node" $cards --install
done
mv "$genesis.partial" "$genesis"
echo "ceremony: $genesis made for $nodes"
