# shellcheck shell=bash
# Extra Slurm nodes for scripts/local-slurm.sh (sourced by it): each node is a slurmd in a
# network namespace and a UTS namespace of its own (own hostname node1..nodeN), joined to this
# host by a veth pair on a bridge.
#
#   bridge torcbr0   10.77.0.1/24   this host on the bridge: the "head" (name torc-head)
#   node<i>          10.77.0.(10+i)  namespace torc-node<i>, interface eth0
#
# The subnet is used by nothing else and has no route out: the namespaces have no default
# route and no NAT, so no traffic leaves the machine. Names resolve through a hosts file per
# node (/etc/netns/torc-node<i>/hosts, bind-mounted over /etc/hosts in the node's own mount
# namespace), so this host's /etc/hosts is not touched. munged is shared through the file
# system (its socket under /run/munge), as are the Slurm configuration and spools.
#
# slurmd enters the network namespace with nsenter, not `ip netns exec`: the latter remounts
# /sys for the namespace, which hides /sys/fs/cgroup, and slurmd then refuses to start.

NODES_STATE=/var/lib/torc-local-slurm/nodes # written by earlier versions; removed by stop
BRIDGE=torcbr0
NET_PREFIX=10.77.0
HEAD_ADDR=$NET_PREFIX.1
HEAD_NAME=torc-head
NODE_CPUS="${LOCAL_SLURM_NODE_CPUS:-2}"
NODE_MEM_MB="${LOCAL_SLURM_NODE_MEM_MB:-2048}"

node_name() { echo "node$1"; }
node_ns() { echo "torc-node$1"; }
node_addr() { echo "$NET_PREFIX.$((10 + $1))"; }
node_pidfile() { echo "/run/slurmd-node$1.pid"; }

# The number of extra nodes in the cluster's configuration (0: none). Read from slurm.conf
# itself: another checkout's older script may have rewritten it.
nodes_configured() {
    if [[ -r "$CONF" ]]; then grep -c '^NodeName=node[0-9]' "$CONF" || true; else echo 0; fi
}

# slurm.conf lines for N extra nodes and their partition "multi".
nodes_conf() {
    local n=$1 i
    ((n > 0)) || return 0
    for ((i = 1; i <= n; i++)); do
        echo "NodeName=$(node_name "$i") NodeAddr=$(node_addr "$i") CPUs=$NODE_CPUS RealMemory=$NODE_MEM_MB State=UNKNOWN"
    done
    echo "PartitionName=multi Nodes=node[1-$n] Default=NO MaxTime=INFINITE State=UP OverSubscribe=NO"
}

nodes_hosts_file() {
    local n=$1 i
    echo "127.0.0.1 localhost"
    echo "$HEAD_ADDR $HEAD_NAME $HOST"
    for ((i = 1; i <= n; i++)); do echo "$(node_addr "$i") $(node_name "$i")"; done
}

# The bridge, and per node a namespace, a veth pair and its hosts file (idempotent).
nodes_net_up() {
    local n=$1 i ns
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link add "$BRIDGE" type bridge || die "cannot create bridge $BRIDGE"
    fi
    ip addr replace "$HEAD_ADDR/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    for ((i = 1; i <= n; i++)); do
        ns="$(node_ns "$i")"
        mkdir -p "/etc/netns/$ns"
        nodes_hosts_file "$n" >"/etc/netns/$ns/hosts"
        if ! ip netns list | grep -qw "$ns"; then
            ip netns add "$ns" || die "cannot create network namespace $ns"
        fi
        if ! ip link show "tn$i" >/dev/null 2>&1; then
            ip link add "tn$i" type veth peer name "tn${i}p" || die "cannot create veth tn$i"
            ip link set "tn${i}p" netns "$ns"
            ip netns exec "$ns" ip link set "tn${i}p" name eth0
        fi
        ip netns exec "$ns" ip addr replace "$(node_addr "$i")/24" dev eth0
        ip netns exec "$ns" ip link set eth0 up
        ip netns exec "$ns" ip link set lo up
        ip link set "tn$i" master "$BRIDGE"
        ip link set "tn$i" up
    done
}

# slurmd of node i, in its namespaces: the node's network namespace, and new UTS and mount
# namespaces (its hostname; its hosts file over /etc/hosts).
node_start_slurmd() {
    local i=$1 name ns
    name="$(node_name "$i")"
    ns="$(node_ns "$i")"
    if pid_alive "$(node_pidfile "$i")" slurmd; then return 0; fi
    mkdir -p "$SLURMD_SPOOL/$name"
    log "starting slurmd $name ($(node_addr "$i"), namespace $ns)"
    nsenter --net="/run/netns/$ns" -- unshare --uts --mount --propagation private -- \
        bash -c "mount --bind '/etc/netns/$ns/hosts' /etc/hosts && hostname $name &&
                 exec slurmd -N $name -f '$CONF'" ||
        die "slurmd $name failed to start"
}

# Every process in node i's network namespace (slurmd, its job steps, what they started).
node_pids() {
    ip netns pids "$(node_ns "$1")" 2>/dev/null || true
}

# Kill node i at once, as a machine that lost power: every process in its namespace.
node_kill() {
    local pids
    pids="$(node_pids "$1")"
    # shellcheck disable=SC2086
    [[ -z "$pids" ]] || kill -KILL $pids 2>/dev/null || true
    rm -f "$(node_pidfile "$1")"
}

# Stop the nodes' slurmd and everything in their namespaces, then remove the namespaces,
# links, hosts files and the bridge.
nodes_down() {
    local n i ns pids
    n="$(nodes_configured)"
    for ((i = 1; i <= 16; i++)); do
        ns="$(node_ns "$i")"
        if ((i > n)) && ! ip netns list 2>/dev/null | grep -qw "$ns"; then continue; fi
        stop_pidfile "$(node_pidfile "$i")" slurmd
        pids="$(node_pids "$i")"
        if [[ -n "$pids" ]]; then
            # shellcheck disable=SC2086
            kill -TERM $pids 2>/dev/null || true
            sleep 0.5
            node_kill "$i"
        fi
        ip link del "tn$i" 2>/dev/null || true
        ip netns del "$ns" 2>/dev/null || true
        rm -rf "/etc/netns/$ns"
    done
    ip link del "$BRIDGE" 2>/dev/null || true
    rm -f "$NODES_STATE"
}

nodes_idle() {
    sinfo -h -N -t idle -o '%N' 2>/dev/null | sort -u | grep -c . || true
}
