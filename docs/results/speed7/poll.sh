#!/usr/bin/env bash
# Wait up to $1 s for $L/ALL_DONE (plan.sh), then print the progress and the tails, and pack the logs (no
# checkpoint) into $OUT.
L=${L:-$HOME/p18}; T=${1:-540}; t0=$(date +%s)
while [ ! -f $L/ALL_DONE ] && [ $(( $(date +%s) - t0 )) -lt $T ]; do sleep 5; done
cat $L/progress.log; nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader
tail -25 $L/prof18.log 2>/dev/null; tail -4 $L/test_gpu.log 2>/dev/null
for b in bench1 bench2; do echo "== $b"; tail -22 $L/$b.log 2>/dev/null; done
tar czf $OUT/p18.tgz -C $(dirname $L) --exclude='*.pt' $(basename $L) 2>/dev/null; ls -la $OUT
