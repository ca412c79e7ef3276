#!/usr/bin/env bash
# Wait up to $1 s for $HOME/p6/ALL_DONE, then pack the logs and results (no checkpoint) into $OUT.
L=$HOME/p6; T=${1:-560}; t0=$(date +%s)
while [ ! -f $L/ALL_DONE ] && [ $(( $(date +%s) - t0 )) -lt $T ]; do sleep 5; done
cat $L/progress.log; nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader
tail -12 $L/bench-K15S4.log; tail -12 $L/bench-K5S8.log; tail -3 $L/test_gpu.log
tar czf $OUT/p6.tgz -C $HOME --exclude='*.pt' --exclude='p6/prev' p6 2>/dev/null; ls -la $OUT
