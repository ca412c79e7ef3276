#!/usr/bin/env bash
# Wait up to $1 s for $L/$2 (plan.sh's ALL_DONE by default), then print the progress and the WER lines, and pack
# the logs (no checkpoints) into $OUT.
L=${L:-$HOME/s8}; T=${1:-540}; F=${2:-ALL_DONE}; t0=$(date +%s)
# a machine that was given back (idle > 30 s between calls) comes back bare: say so at once instead of waiting
[ -f $L/progress.log ] || { echo "no $L/progress.log: this is a fresh machine, plan.sh's run is gone"; exit 3; }
while [ ! -f $L/$F ] && [ $(( $(date +%s) - t0 )) -lt $T ]; do sleep 5; done
cat $L/progress.log; tail -n 3 $L/corpus.log $L/s0.log $L/s1.log $L/s2.log $L/test_gpu.log 2>/dev/null | cut -c1-300
for f in $L/wer-*-*.log; do echo "== $f"; grep -A4 "^system" $f; done 2>/dev/null
tar czf $OUT/s8.tgz -C $(dirname $L) --exclude='*.pt' $(basename $L) 2>/dev/null; ls -la $OUT
