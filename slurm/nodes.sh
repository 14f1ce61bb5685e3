# shellcheck shell=bash
# `slurm/cluster.sh ... --nodes N`: N SLURM nodes on this one machine (sourced by cluster.sh, whose
# settings, say/die/alive, start_daemon/stop_daemon, conf_common and install_conf it uses).
#
# Each node is a slurmd in its own network and UTS namespace, so it has its own address and host
# name as real nodes do (Gloo and NCCL pick their interface from the host name):
#   bridge lev<PORT>br, <SUBNET>.1/24, in the host's namespace (slurmctld listens there:
#     SlurmctldHost=<this host>(<SUBNET>.1));
#   node i: namespace and host name lev<PORT>n<i> (/run/netns/...), a veth pair lev<PORT>v<i> on
#     the bridge <-> eth0 <SUBNET>.(10+i) inside, and an /etc/hosts line for its name;
#   munged of its own: key $DIR/etc/munge.key, socket $DIR/munge/munge.socket (AuthInfo), so the
#     one-node cluster's munged is never touched.
# slurmd starts through `nsenter --net=/run/netns/<ns> unshare --uts` and not `ip netns exec`,
# which remounts /sys in a new mount namespace, where slurmd's cgroup code fails.

SUBNET="${LEVIATHAN_SLURM_SUBNET:-10.$((PORT / 256 % 256)).$((PORT % 256))}"
PREFIX="lev${PORT}n"
BRIDGE="lev${PORT}br"
NMUNGE_DIR="$DIR/munge"
NMUNGE_SOCKET="$NMUNGE_DIR/munge.socket"
NMUNGE_KEY="$DIR/etc/munge.key"
NMUNGE_PID="$NMUNGE_DIR/munged.pid"
HOSTS_MARK="# leviathan slurm/cluster.sh $DIR"
NODE_MARK="$MARK --nodes $NODES"

node_name() { echo "$PREFIX$1"; }
node_addr() { echo "$SUBNET.$((10 + $1))"; }
munge_ok() { munge -S "$NMUNGE_SOCKET" -n </dev/null | unmunge -S "$NMUNGE_SOCKET" >/dev/null 2>&1; }

lock_cluster() {  # one `up` or `down` of this cluster at a time (tests start it from several
    mkdir -p "$DIR"  # processes at once); released when the script exits
    exec 9>"$DIR/cluster.lock"
    flock -w 600 9 || die 1 "another slurm/cluster.sh still holds $DIR/cluster.lock"
}

refuse_other_cluster() {
    # A folder holds one cluster: never reconfigure another shape's running daemons.
    if [[ -f $CONF ]] && [[ $(head -n 1 "$CONF") != "$NODE_MARK"* ]] \
        && alive "$DIR/run/slurmctld.pid"; then
        die 1 "$DIR holds a running cluster of another shape ($(head -n 1 "$CONF")); set" \
              "LEVIATHAN_SLURM_DIR and LEVIATHAN_SLURM_PORT for this one"
    fi
}

net_up() {
    local i n host peer
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link add "$BRIDGE" type bridge 2>/dev/null \
            || die 4 "cannot create a network bridge here (ip link add $BRIDGE type bridge)"
        ip addr add "$SUBNET.1/24" dev "$BRIDGE"
    fi
    ip link set "$BRIDGE" up
    for i in $(seq "$NODES"); do
        n=$(node_name "$i") host="lev${PORT}v$i" peer="lev${PORT}p$i"
        if [[ ! -e /run/netns/$n ]]; then
            ip netns add "$n" 2>/dev/null || die 4 "cannot create network namespaces here" \
                                                   "(ip netns add $n)"
        fi
        if ! ip link show "$host" >/dev/null 2>&1; then
            ip link add "$host" type veth peer name "$peer" 2>/dev/null \
                || die 4 "cannot create veth pairs here (ip link add $host type veth)"
            ip link set "$peer" netns "$n"
            ip -n "$n" link set "$peer" name eth0
            ip -n "$n" addr add "$(node_addr "$i")/24" dev eth0
            ip link set "$host" master "$BRIDGE" up
        fi
        ip -n "$n" link set lo up
        ip -n "$n" link set eth0 up
    done
    say "network: bridge $BRIDGE $SUBNET.1/24, nodes ${PREFIX}[1-$NODES] at" \
        "$(node_addr 1)..$(node_addr "$NODES") (eth0 in namespaces /run/netns/${PREFIX}*)"
}

net_down() {
    local i
    for i in $(seq "$NODES"); do
        ip netns del "$(node_name "$i")" 2>/dev/null || true  # takes its end of the veth pair
        ip link del "lev${PORT}v$i" 2>/dev/null || true
    done
    if ip link del "$BRIDGE" 2>/dev/null; then say "removed bridge $BRIDGE and the namespaces"; fi
}

hosts_without_ours() {  # /etc/hosts without the lines this cluster added
    awk -v m="$HOSTS_MARK" 'length($0) < length(m) || substr($0, length($0) - length(m) + 1) != m' \
        /etc/hosts
}

hosts_write() {  # content on stdin; in place (the same inode: /etc/hosts may be a bind mount)
    local tmp
    tmp=$(mktemp)
    cat >"$tmp"
    if ! cmp -s "$tmp" /etc/hosts; then cat "$tmp" >/etc/hosts; fi
    rm -f "$tmp"
}

hosts_add() {
    local i
    {
        hosts_without_ours
        for i in $(seq "$NODES"); do
            printf '%s %s %s\n' "$(node_addr "$i")" "$(node_name "$i")" "$HOSTS_MARK"
        done
    } | hosts_write
    say "/etc/hosts: ${PREFIX}[1-$NODES] -> $(node_addr 1)..$(node_addr "$NODES")"
}

hosts_remove() {
    if grep -qF "$HOSTS_MARK" /etc/hosts; then
        hosts_without_ours | hosts_write
        say "/etc/hosts: removed ${PREFIX}[1-$NODES]"
    fi
}

start_private_munge() {
    mkdir -p "$NMUNGE_DIR" "$DIR/etc"
    if [[ ! -s $NMUNGE_KEY ]]; then
        if command -v mungekey >/dev/null; then mungekey --create --keyfile="$NMUNGE_KEY"
        else dd if=/dev/urandom of="$NMUNGE_KEY" bs=1024 count=1 status=none; fi
        say "generated munge key $NMUNGE_KEY"
    fi
    chown munge:munge "$NMUNGE_KEY" "$NMUNGE_DIR" && chmod 0400 "$NMUNGE_KEY"
    chmod 0755 "$NMUNGE_DIR"  # munged: the socket's folder must be searchable by all
    if alive "$NMUNGE_PID" && munge_ok; then
        say "munged already running (pid $(cat "$NMUNGE_PID"), socket $NMUNGE_SOCKET)"
        return
    fi
    runuser -u munge -- munged --socket="$NMUNGE_SOCKET" --key-file="$NMUNGE_KEY" \
        --pid-file="$NMUNGE_PID" --log-file="$NMUNGE_DIR/munged.log" \
        --seed-file="$NMUNGE_DIR/munged.seed" 9>&- \
        || { tail -n 20 "$NMUNGE_DIR/munged.log" >&2 || true; die 1 "munged failed to start"; }
    for _ in $(seq 50); do munge_ok && break; sleep 0.1; done
    munge_ok || die 1 "munged did not come up (log $NMUNGE_DIR/munged.log)"
    say "started munged (pid $(cat "$NMUNGE_PID"), socket $NMUNGE_SOCKET)"
}

write_nodes_conf() {
    # Every node gets this machine's CPUs and memory, as slurmd detects them.
    local spec i n
    spec=$(slurmd -C | head -n 1 | sed -E 's/^NodeName=[^ ]+ //')
    {
        echo "$NODE_MARK: edits are overwritten by 'up'"
        conf_common "leviathan${NODES}n" "$(hostname)($SUBNET.1)" "$DIR/run/slurmd-%n.pid" \
            "$DIR/log/slurmd-%n.log"
        echo "# This cluster's own munged (slurm/nodes.sh): clients and daemons use its socket."
        echo "AuthInfo=socket=$NMUNGE_SOCKET"
        for i in $(seq "$NODES"); do
            n=$(node_name "$i")
            echo "NodeName=$n NodeHostname=$n NodeAddr=$(node_addr "$i") $spec State=UNKNOWN"
        done
        echo "PartitionName=$PARTITION Nodes=${PREFIX}[1-$NODES] Default=YES MaxTime=INFINITE" \
             "State=UP"
    } >"$CONF.new"
    install_conf "$NODES nodes ${PREFIX}[1-$NODES], $spec each"
}

start_node() {  # i: slurmd of node i, in its namespaces
    local n
    n=$(node_name "$1")
    start_daemon "slurmd-$n" "$DIR/run/slurmd-$n.pid" nsenter --net="/run/netns/$n" \
        unshare --uts sh -c "hostname $n && exec slurmd -N $n -f $CONF"
}

stop_node() {  # i: every process in node i's namespace (slurmd, slurmstepd, job tasks)
    local n pids
    n=$(node_name "$1")
    [[ -e /run/netns/$n ]] || return 0
    pids=$(ip netns pids "$n" 2>/dev/null | tr '\n' ' ')
    if [[ -n ${pids// } ]]; then
        # shellcheck disable=SC2086
        kill $pids 2>/dev/null || true
        for _ in $(seq 100); do [[ -z $(ip netns pids "$n" 2>/dev/null) ]] && break; sleep 0.1; done
        pids=$(ip netns pids "$n" 2>/dev/null | tr '\n' ' ')
        # shellcheck disable=SC2086
        if [[ -n ${pids// } ]]; then kill -9 $pids 2>/dev/null || true; fi
        say "stopped node $n (slurmd and its jobs)"
    fi
    rm -f "$DIR/run/slurmd-$n.pid"
}

wait_nodes_idle() {
    local t0=$SECONDS states ready
    while (( SECONDS - t0 < WAIT_S )); do
        states=$(sinfo -h -N -p "$PARTITION" -o '%N %T' 2>/dev/null || true)
        ready=$(grep -cE ' (idle|mixed|allocated)' <<<"$states" || true)
        if (( ready == NODES )); then
            say "$NODES nodes up (sinfo after $((SECONDS - t0)) s)"; return
        fi
        while read -r node state; do
            case "$state" in
                down*|drain*|fail*) scontrol update nodename="$node" state=resume 2>/dev/null \
                                        || true ;;
            esac
        done <<<"$states"
        sleep 0.3
    done
    sinfo -N -l >&2 || true
    tail -n 20 "$DIR/log/slurmctld.log" "$DIR"/log/slurmd-*.log >&2 || true
    die 1 "nodes not idle after ${WAIT_S} s: ${states:-no answer}"
}

up() {
    local t0=$SECONDS changed=0 i
    need_root
    lock_cluster
    refuse_other_cluster
    mkdir -p "$DIR"/{etc,state,spool,run,log}
    install_packages
    net_up
    hosts_add
    start_private_munge
    write_nodes_conf && changed=1
    if (( changed )) && alive "$DIR/run/slurmctld.pid"; then
        say "configuration changed: restarting the nodes and slurmctld"
        for i in $(seq "$NODES"); do stop_node "$i"; done
        stop_daemon slurmctld "$DIR/run/slurmctld.pid"
    fi
    start_daemon slurmctld "$DIR/run/slurmctld.pid" slurmctld -f "$CONF"
    for _ in $(seq 50); do scontrol ping 2>/dev/null | grep -q 'is UP' && break; sleep 0.1; done
    for i in $(seq "$NODES"); do start_node "$i"; done
    wait_nodes_idle
    say "cluster up in $((SECONDS - t0)) s: $NODES nodes, partition '$PARTITION'," \
        "SLURM_CONF=$CONF"
}

down() {
    local i
    need_root
    lock_cluster
    for i in $(seq "$NODES"); do stop_node "$i"; done
    stop_daemon slurmctld "$DIR/run/slurmctld.pid"
    if alive "$NMUNGE_PID"; then stop_daemon munged "$NMUNGE_PID"; fi
    net_down
    hosts_remove
    if [[ ${1:-} == --clean ]]; then
        rm -rf "${DIR:?}"/{state,spool,run,log,munge}
        say "wiped state, spool, run, log and munge under $DIR"
    fi
}

status() {
    local rc=0 i n
    if alive "$DIR/run/slurmctld.pid"; then
        say "slurmctld running (pid $(cat "$DIR/run/slurmctld.pid"))"
    else say "slurmctld not running"; rc=1; fi
    for i in $(seq "$NODES"); do
        n=$(node_name "$i")
        if alive "$DIR/run/slurmd-$n.pid"; then
            say "slurmd $n running (pid $(cat "$DIR/run/slurmd-$n.pid"), $(node_addr "$i"))"
        else say "slurmd $n not running"; rc=1; fi
    done
    if alive "$NMUNGE_PID"; then say "munged running (pid $(cat "$NMUNGE_PID"))"
    else say "munged not running"; rc=1; fi
    say "SLURM_CONF=$CONF"
    if (( rc == 0 )); then sinfo; fi
    return $rc
}
