#!/bin/sh
# stardock-hpc testbed: the inside of a compute node, run by tbnodes.start as root in the node's
# new UTS, mount and cgroup namespaces (and its network namespace); ends by becoming its slurmd.
#   node-init.sh NAME STATE HOSTS VARTMP MOUNTPOINT:TYPE:OPTIONS...
set -eu
name=$1 state=$2 hosts=$3 vartmp=$4
shift 4
hostname "$name"

# cgroups: the node's subtree is its root (the cgroup namespace makes it so for fresh mounts)
mount -n -t tmpfs -o mode=755,nosuid,nodev,noexec cgroup /sys/fs/cgroup
for h in "$@"; do
    point=${h%%:*}; rest=${h#*:}; type=${rest%%:*}; opts=${rest#*:}
    mkdir -p "$point"
    if [ "$type" = cgroup2 ]; then mount -n -t cgroup2 none "$point"; else mount -n -t cgroup -o "$opts" cgroup "$point"; fi
done

# node-local /tmp, /run and /dev/shm (memory) and /var/tmp (the node's disk), empty at every start; the shared state (cache,
# volumes, configs, the testbed's Python) bound back in, as a parallel file system is mounted
mount -n -t tmpfs -o mode=1777,nosuid,nodev tmp /tmp
mount -n -t tmpfs -o mode=1777,nosuid,nodev shm /dev/shm
mkdir /tmp/.run /tmp/.vartmp
mount -n -t tmpfs -o mode=755,nosuid,nodev run /tmp/.run
mkdir -p /tmp/.run/munge /tmp/.run/user
mount -n --bind /run/munge /tmp/.run/munge
mount -n --move /tmp/.run /run
mount -n --bind "$vartmp" /tmp/.vartmp   # the node's local disk
case "$state" in
    /var/tmp/*) mkdir -p "/tmp/.vartmp/${state#/var/tmp/}"
                mount -n --bind "$state" "/tmp/.vartmp/${state#/var/tmp/}" ;;
    /tmp/*|/run/*|/dev/shm/*) echo "node-init: the testbed's state $state would be hidden on the node" >&2; exit 1 ;;
esac
mount -n --move /tmp/.vartmp /var/tmp
rmdir /tmp/.run /tmp/.vartmp
mount -n --bind "$hosts" /etc/hosts
chmod 755 /run/user
for u in ${NODE_USERS:-}; do
    mkdir -m 700 "/run/user/${u%%:*}" && chown "$u" "/run/user/${u%%:*}"
done

exec /usr/sbin/slurmd -D -N "$name"
