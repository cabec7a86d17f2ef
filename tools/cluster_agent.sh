#!/bin/sh
# OpenMPI's remote-shell agent for tools/cluster.sh: "agent [OPTIONS] HOST CMD..." runs CMD in
# the network namespace of HOST (10.77.0.I is ohostI).
while [ "${1#-}" != "$1" ]; do shift; done
host=$1
shift
case $host in
  10.77.0.*) ns=ohost${host#10.77.0.} ;;
  *) echo "cluster_agent: unknown host $host" >&2; exit 1 ;;
esac
exec ip netns exec "$ns" /bin/sh -c "$*"
