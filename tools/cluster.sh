#!/bin/bash
# K "hosts" on this machine: network namespaces ohost1..ohostK, each with one veth link to a
# switch (a bridge in namespace ohub), addresses 10.77.0.1..K/24 that exist only inside these
# namespaces (nothing else is ever addressed), each host's link shaped with tc (a rate
# alone: tbf; delay or loss: netem, where the kernel has it). mpirun runs inside ohost1 and starts the other hosts' daemons through
# tools/cluster_agent.sh (OpenMPI's plm_rsh_agent: `ip netns exec`), over TCP only.
#   tools/cluster.sh up K [RATE [DELAY [LOSS]]]   e.g. up 2 1gbit, or up 2 1gbit 100us 1%  (root)
#   tools/cluster.sh run K PER_HOST CMD...        mpirun -np K*PER_HOST across the hosts
#   tools/cluster.sh cut I | heal I               take host I's link down / up
#   tools/cluster.sh down                         remove every namespace it made (and kill
#                                                 what still runs inside them)
# Ranks are placed by host: ranks 0..PER_HOST-1 on host 1, and so on.
set -euo pipefail
cd "$(dirname "$0")/.."
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
      if [ -n "$RATE$DELAY$LOSS" ]; then  # the host's outbound link (and, on the switch, inbound)
        if [ -z "$DELAY$LOSS" ]; then  # rate only: a token bucket (no netem needed)
          q="tbf rate $RATE burst 64kb latency 100ms"
        else
          q="netem ${RATE:+rate $RATE} ${DELAY:+delay $DELAY} ${LOSS:+loss $LOSS}"
        fi
        for side in "ohost$i vh$i" "ohub vb$i"; do
          set -- $side
          ip netns exec "$1" tc qdisc add dev "$2" root $q ||
            { echo "tc qdisc $q failed (delay and loss need the kernel's netem)" >&2; exit 1; }
        done
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
      pids=$(ip netns pids ohost$i)
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
    done ;;
  *) echo "unknown command $cmd" >&2; exit 2 ;;
esac
