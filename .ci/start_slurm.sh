#!/usr/bin/env bash
# Install (if needed) and start a one-node SLURM cluster on localhost, for the
# tests marked `slurm`. Debian's slurm-wlm 22.05 with munge, running as root.
# Exits 0 with a message if SLURM cannot be installed or started: the tests
# then skip with the reason.
set -u
log() { echo "[start_slurm] $*"; }
if ! command -v slurmctld >/dev/null; then
    if [ "$(id -u)" != 0 ]; then log "not root: cannot install slurm-wlm"; exit 0; fi
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge) >/tmp/slurm-install.log 2>&1 \
        || { log "could not install slurm-wlm (see /tmp/slurm-install.log)"; exit 0; }
fi
if sinfo >/dev/null 2>&1; then log "SLURM already running"; exit 0; fi
HOST=$(hostname -s)
CPUS=$(nproc)
MEM=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /var/lib/munge /etc/munge
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
fi
chown -R munge:munge /etc/munge /var/lib/munge /run/munge /var/log/munge 2>/dev/null || true
chmod 400 /etc/munge/munge.key
pgrep -x munged >/dev/null || su -s /bin/sh munge -c "/usr/sbin/munged" 2>/dev/null || /usr/sbin/munged --force
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=cryodet-ci
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
SchedulerType=sched/backfill
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
/usr/sbin/slurmctld 2>/dev/null || log "slurmctld did not start (see /var/log/slurm/slurmctld.log)"
/usr/sbin/slurmd 2>/dev/null || log "slurmd did not start (see /var/log/slurm/slurmd.log)"
for _ in $(seq 1 30); do
    if sinfo -h -o %t 2>/dev/null | grep -qE 'idle|mix|alloc'; then log "SLURM up: $(sinfo -h)"; exit 0; fi
    scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
    sleep 1
done
log "SLURM did not come up: $(sinfo 2>&1 | tail -n 2)"
exit 0
