#!/usr/bin/env bash
# Starts a single-node Slurm (munged, slurmctld, slurmd) in STATE_DIR, submits SBATCH (a job
# array written by `compromis sweep --slurm`) with `sbatch --wait`, and stops the daemons again.
# Exit 0 when the job array completed, 77 when the daemons could not be started (the test then
# skips), 1 when the job failed. Must run as root (slurmd launches the tasks).
#   usage: run-sweep.sh STATE_DIR SBATCH
set -uo pipefail
S=$1
JOB=$2
mkdir -p "$S"/ctld "$S"/spool
S=$(cd "$S" && pwd)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null
  done
}
trap cleanup EXIT
skip() { echo "run-sweep.sh: $*" >&2; for f in "$S"/*.log "$S"/*.err; do echo "== $f" >&2; tail -20 "$f" >&2; done; exit 77; }

# munge: a fresh key and socket of our own.
head -c 1024 /dev/urandom > "$S/munge.key"
chmod 400 "$S/munge.key"
munged --foreground --force --socket="$S/munge.sock" --key-file="$S/munge.key" \
  --pid-file="$S/munged.pid" --log-file="$S/munged.log" --seed-file="$S/munged.seed" \
  2>>"$S/munged.err" &
pids+=($!)
for _ in $(seq 50); do [ -S "$S/munge.sock" ] && break; sleep 0.1; done
[ -S "$S/munge.sock" ] || skip "munged did not start"

node=$(hostname -s)
base=$((20000 + $$ % 20000))
cat > "$S/slurm.conf" <<CONF
ClusterName=compromistest
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$base
SlurmdPort=$((base + 1))
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$S/munge.sock
StateSaveLocation=$S/ctld
SlurmdSpoolDir=$S/spool
SlurmctldPidFile=$S/slurmctld.pid
SlurmdPidFile=$S/slurmd.pid
SlurmctldLogFile=$S/slurmctld.log
SlurmdLogFile=$S/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
NodeName=$node NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=test Nodes=$node Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$S/slurm.conf"

slurmctld -D -i -f "$SLURM_CONF" 2>>"$S/slurmctld.err" &
pids+=($!)
slurmd -D -N "$node" -f "$SLURM_CONF" 2>>"$S/slurmd.err" &
pids+=($!)
ready=
for _ in $(seq 100); do
  if sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then ready=1; break; fi
  sleep 0.2
done
[ -n "$ready" ] || skip "the node did not become idle"

echo "run-sweep.sh: Slurm up on $node; submitting $JOB" >&2
if ! timeout 600 sbatch --wait "$JOB"; then
  echo "run-sweep.sh: the job array failed" >&2
  for f in "$S"/*.log "$(dirname "$JOB")"/slurm-*.out; do echo "== $f" >&2; tail -20 "$f" >&2; done
  exit 1
fi
sacct >/dev/null 2>&1 || true
exit 0
