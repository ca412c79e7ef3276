#!/usr/bin/env bash
# Wait up to $1 s for $HOME/p8/ALL_DONE, then pack the logs and results (no checkpoint) into $OUT.
L=${L:-$HOME/p8}; T=${1:-560}; t0=$(date +%s)
while [ ! -f $L/ALL_DONE ] && [ $(( $(date +%s) - t0 )) -lt $T ]; do sleep 5; done
cat $L/progress.log; nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader
for b in ${BENCHES:-new-base prev-base new-tiny K5S8-base}; do echo "== $b"; tail -14 $L/bench-$b.log 2>/dev/null; done
tar czf $OUT/p8.tgz -C $(dirname $L) --exclude='*.pt' --exclude="$(basename $L)/prev" $(basename $L) 2>/dev/null; ls -la $OUT
