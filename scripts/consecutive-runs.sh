#!/usr/bin/env bash
# make integration N times in a row (each in pytest-randomly's random order), one line
# per run: its seed, verdict and wall time, then what it left: every earshot.server or
# `pytest integration` process still alive (named in runs/left-N.txt) and every
# earshot-labelled container. Stops at the first failure (a failure is a bug to find,
# not a run to retry).
#
#     scripts/consecutive-runs.sh [N=20] [FOLDER=runs]
set -u
count=${1:-20}
folder=${2:-runs}
mkdir -p "$folder"
for i in $(seq 1 "$count"); do
  start=$(date +%s)
  make integration > "$folder/run-$i.log" 2>&1
  rc=$?
  wall=$(( $(date +%s) - start ))
  seed=$(grep -o "randomly-seed=[0-9]*" "$folder/run-$i.log" | head -1 | cut -d= -f2)
  verdict=$(grep -aE "^=+ .*(passed|failed).* in " "$folder/run-$i.log" | tail -1 | tr -d '=')
  ps -eo pid,cmd | grep -E "earshot.server|pytest integration" | grep -v grep > "$folder/left-$i.txt"
  left=$(wc -l < "$folder/left-$i.txt")
  containers=$(docker ps -aq --filter label=org.earshot.managed | wc -l)
  echo "$i seed=$seed rc=$rc wall=${wall}s $verdict processes_left=$left containers_left=$containers" \
    | tee -a "$folder/summary.txt"
  [ "$rc" -eq 0 ] || { echo "stopped at run $i" | tee -a "$folder/summary.txt"; exit 1; }
done
