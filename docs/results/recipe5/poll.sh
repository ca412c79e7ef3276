#!/usr/bin/env bash
# Wait up to $1 s for plan.sh's $2 (ALL_DONE by default), then print the progress and the WER tables, and pack
# the logs (no checkpoints) into $OUT.
L=${L:-$HOME/r5}; T=${1:-540}; F=${2:-ALL_DONE}; t0=$(date +%s)
[ -f $L/progress.log ] || { echo "no $L/progress.log: this is a fresh machine, plan.sh's run is gone"; exit 3; }
while [ ! -f $L/$F ] && [ $(( $(date +%s) - t0 )) -lt $T ]; do sleep 5; done
cat $L/progress.log; tail -n 2 $L/corpus.log $L/s0.log $L/s1.log $L/s2.log 2>/dev/null | cut -c1-300
for f in $L/*.log; do grep -q "^system" $f 2>/dev/null && { echo "== $f"; grep -A4 "^system" $f; }; done
tar czf $OUT/r5.tgz -C $(dirname $L) --exclude='*.pt' --exclude='features' $(basename $L) 2>/dev/null; ls -la $OUT
