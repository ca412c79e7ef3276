#!/usr/bin/env bash
# Wait up to $1 s for $L/$2 (plan2.sh's WER_DONE or ALL_DONE), then print the progress and the tails, and pack the
# logs into $OUT.
L=${L:-$HOME/p19}; T=${1:-540}; F=${2:-ALL_DONE}; t0=$(date +%s)
while [ ! -f $L/$F ] && [ $(( $(date +%s) - t0 )) -lt $T ]; do sleep 5; done
cat $L/progress.log; tail -20 $L/bench3.log 2>/dev/null
for f in $L/wer-*-*.log; do echo "== $f"; grep -A3 "^system" $f; done 2>/dev/null
tar czf $OUT/p19.tgz -C $(dirname $L) --exclude='*.pt' $(basename $L) 2>/dev/null; ls -la $OUT
