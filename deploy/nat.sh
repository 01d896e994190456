#!/usr/bin/env bash
# Forwarding and source NAT for a Ringway server's address pool, with nftables.
#   nat.sh up   /etc/ringway/server.toml [OUT_IFACE]
#   nat.sh down /etc/ringway/server.toml
# OUT_IFACE defaults to the interface of the default route. Everything lives in
# one nftables table, `ringway`, so `down` removes exactly what `up` added.
set -euo pipefail
action=${1:?usage: nat.sh up|down CONFIG [OUT_IFACE]}
config=${2:?usage: nat.sh up|down CONFIG [OUT_IFACE]}
pool=$(sed -n 's/^[[:space:]]*pool[[:space:]]*=[[:space:]]*"\(.*\)".*/\1/p' "$config" | head -n1)
tun=$(sed -n 's/^[[:space:]]*tun_name[[:space:]]*=[[:space:]]*"\(.*\)".*/\1/p' "$config" | head -n1)
tun=${tun:-ringway0}
[ -n "$pool" ] || { echo "nat.sh: no pool in $config" >&2; exit 1; }
command -v nft >/dev/null || { echo "nat.sh: nft not found: apt-get install nftables" >&2; exit 1; }

case "$action" in
up)
    out=${3:-$(ip -o route show default | awk '{for (i=1;i<NF;i++) if ($i=="dev") {print $(i+1); exit}}')}
    [ -n "$out" ] || { echo "nat.sh: no default route; pass OUT_IFACE" >&2; exit 1; }
    sysctl -q -w net.ipv4.ip_forward=1
    nft -f - <<NFT
table ip ringway
delete table ip ringway
table ip ringway {
    chain forward {
        type filter hook forward priority filter; policy accept;
        iifname "$tun" oifname "$out" accept
        iifname "$out" oifname "$tun" ct state established,related accept
        iifname "$out" oifname "$tun" drop
    }
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr $pool oifname "$out" masquerade
    }
}
NFT
    ;;
down)
    nft delete table ip ringway 2>/dev/null || true
    ;;
*)
    echo "usage: nat.sh up|down CONFIG [OUT_IFACE]" >&2; exit 2
    ;;
esac
