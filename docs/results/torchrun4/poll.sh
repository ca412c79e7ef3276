#!/usr/bin/env bash
# Wait up to $1 s for $HOME/lev5/ALL_DONE, then pack the logs and results (no checkpoints) into $OUT.
L=$HOME/lev5; T=${1:-560}; t0=$(date +%s)
while [ ! -f $L/ALL_DONE ] && [ $(( $(date +%s) - t0 )) -lt $T ]; do sleep 10; done
tail -40 $L/progress.log; nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader
tar czf $OUT/lev5.tgz -C $HOME lev5 2>/dev/null; ls -la $OUT
