#!/usr/bin/env bash
# Wait up to $1 s for plan.sh's $2 (ALL_DONE by default), packing the logs (no checkpoints) into $OUT every 20 s
# (a call cut short still brings back what is there), then print the progress and the WER tables.
L=${L:-$HOME/r5}; T=${1:-540}; F=${2:-ALL_DONE}; t0=$(date +%s)
[ -f $L/progress.log ] || { echo "no $L/progress.log: this is a fresh machine, plan.sh's run is gone"; exit 3; }
N=$(basename $L)  # the tarball is named after the run's folder: r5.tgz, r6.tgz
pack() { tar czf $OUT/$N.tmp -C $(dirname $L) --exclude='*.pt' --exclude='features' $N 2>/dev/null
  mv $OUT/$N.tmp $OUT/$N.tgz; }
while [ ! -f $L/$F ] && [ $(( $(date +%s) - t0 )) -lt $T ]; do pack; sleep 20; done
pack; cat $L/progress.log; tail -n 2 $L/corpus.log $L/s0.log $L/s1.log $L/s2.log 2>/dev/null | cut -c1-300
for f in $L/*.log; do grep -q "^system" $f 2>/dev/null && { echo "== $f"; grep -A4 "^system" $f; }; done
ls -la $OUT
