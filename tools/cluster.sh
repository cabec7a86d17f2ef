#!/bin/bash
# K "hosts" on this machine: network namespaces ohost1..ohostK, each with one veth link to a
# switch (a bridge in namespace ohub), addresses 10.77.0.1..K/24 that exist only inside these
# namespaces (nothing else is ever addressed), each host's link shaped: a rate with tc's token
# bucket (tbf), a one-way delay and random loss with netfilter (a delay via NFQUEUE and
# tools/netdelay.c, with iptables: the kernel here has no netem). mpirun runs inside ohost1 and starts the other hosts' daemons through
# tools/cluster_agent.sh (OpenMPI's plm_rsh_agent: `ip netns exec`), over TCP only.
#   tools/cluster.sh up K [RATE [DELAY [LOSS]]]   e.g. up 2 1gbit, up 2 1gbit 200us, up 2 '' 1ms 1%  (root)
#   tools/cluster.sh run K PER_HOST CMD...        mpirun -np K*PER_HOST across the hosts
#   tools/cluster.sh cut I | heal I               take host I's link down / up
#   tools/cluster.sh down                         remove every namespace it made (and kill
#                                                 what still runs inside them)
# Ranks are placed by host: ranks 0..PER_HOST-1 on host 1, and so on.
set -euo pipefail
cd "$(dirname "$0")/.."
state=/run/origami-cluster  # netdelay's pids and logs
cmd=${1:?usage: tools/cluster.sh up|run|cut|heal|down ...}
shift
case $cmd in
  up)
    K=${1:?K}; RATE=${2:-}; DELAY=${3:-}; LOSS=${4:-}
    ip netns add ohub
    ip -n ohub link add br0 type bridge
    ip -n ohub link set br0 up
    for i in $(seq 1 "$K"); do
      ip netns add ohost$i
      ip link add vh$i type veth peer name vb$i
      ip link set vh$i netns ohost$i
      ip link set vb$i netns ohub
      ip -n ohub link set vb$i master br0
      ip -n ohub link set vb$i up
      ip -n ohost$i addr add 10.77.0.$i/24 dev vh$i
      ip -n ohost$i link set vh$i up
      ip -n ohost$i link set lo up
      if [ -n "$RATE" ]; then  # the host's outbound link and, on the switch, its inbound one
        for side in "ohost$i vh$i" "ohub vb$i"; do
          set -- $side
          ip netns exec "$1" tc qdisc add dev "$2" root tbf rate "$RATE" burst 64kb latency 100ms
        done
      fi
      # Delay and loss without netem (this kernel has none; it has netfilter with NFQUEUE):
      # iptables rules drop LOSS of the packets arriving at a host at random (as the network
      # would: the sender sees no error) and queue the packets it sends on its link
      # to tools/netdelay.c, which releases each DELAY after it was sent.
      if [ -n "$LOSS" ]; then
        p=$(awk -v l="${LOSS%\%}" 'BEGIN { printf "%.6f", l / 100 }')
        ip netns exec ohost$i iptables -A INPUT -i vh$i -m statistic --mode random \
          --probability "$p" -j DROP
      fi
      if [ -n "$DELAY" ]; then
        us=$(awk -v d="$DELAY" 'BEGIN { v = d + 0; if (d ~ /ms$/) v *= 1000;
                                        else if (d ~ /[0-9]s$/) v *= 1e6; printf "%d", v }')
        mkdir -p build "$state"
        [ build/netdelay -nt tools/netdelay.c ] ||
          cc -O2 -o build/netdelay tools/netdelay.c -lnetfilter_queue
        ip netns exec ohost$i setsid build/netdelay 0 "$us" < /dev/null > "$state/netdelay$i.log" 2>&1 &
        echo $! > "$state/netdelay$i.pid"
        ip netns exec ohost$i iptables -A OUTPUT -o vh$i -j NFQUEUE --queue-num 0 --queue-bypass
      fi
    done ;;
  run)
    K=${1:?K}; PER=${2:?PER_HOST}; shift 2
    hosts=$(for i in $(seq 1 "$K"); do printf '10.77.0.%d:%d,' "$i" "$PER"; done)
    env=()  # the variables the ranks need, where set
    for v in OMPI_ALLOW_RUN_AS_ROOT OMPI_ALLOW_RUN_AS_ROOT_CONFIRM OMP_NUM_THREADS ORIGAMI_ERROR_AGREE_S; do
      [ -n "${!v:-}" ] && env+=(-x "$v")
    done
    rc=0
    ip netns exec ohost1 mpirun -np $((K * PER)) --host "${hosts%,}" --bind-to none \
      --mca plm_rsh_agent "$PWD/tools/cluster_agent.sh" --mca btl tcp,self \
      --mca btl_tcp_if_include 10.77.0.0/24 --mca oob_tcp_if_include 10.77.0.0/24 \
      --mca oob_tcp_keepalive_time 2 --mca oob_tcp_keepalive_intvl 1 --mca oob_tcp_keepalive_probes 3 \
      "${env[@]}" "$@" || rc=$?
    # A host mpirun lost (its link cut) keeps its daemon and ranks: end them with the job.
    for i in $(seq 2 "$K"); do
      pids=$(ip netns pids ohost$i | grep -vxF "$(cat "$state/netdelay$i.pid" 2> /dev/null || echo none)" || true)
      [ -z "$pids" ] || kill -9 $pids 2> /dev/null || true
    done
    exit $rc ;;
  cut) ip -n ohost"${1:?I}" link set vh"$1" down ;;
  heal) ip -n ohost"${1:?I}" link set vh"$1" up ;;
  down)  # processes still inside (a cut host's daemon and ranks) are killed first
    for ns in $(ip netns list | awk '{print $1}' | grep -E '^(ohost[0-9]+|ohub)$' || true); do
      pids=$(ip netns pids "$ns")
      [ -z "$pids" ] || kill -9 $pids 2> /dev/null || true
      ip netns del "$ns"
    done
    rm -rf "$state" ;;
  *) echo "unknown command $cmd" >&2; exit 2 ;;
esac
