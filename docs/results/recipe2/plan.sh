#!/usr/bin/env bash
# Record of the 2026-11-27 sitting (README Results, "The current recipe"): the second lever sitting on the 4-GPU machine (background, setsid). Progress + results in $L.
# Env: SIZE, T0/T1/T2, BATCH; CPU dry run: DEV='--device cpu' P0='--preset tiny' SIZE=small T0=0.05 ...
set -u
cd "$(dirname "$0")/../../.."  # the project root (it ran as .device/bin/plan.sh, two levels down)
[ -f .device/bin/env.sh ] && source .device/bin/env.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
L=${L:-$HOME/levers2}; mkdir -p $L
PY=${PY:-python3}; SIZE=${SIZE:-default}; T0=${T0:-2}; T1=${T1:-4.5}; T2=${T2:-4.5}; BATCH=${BATCH:-256}
P0=${P0:-}; DEV=${DEV:-}; CK=checkpoints/lev2; LIMIT=${LIMIT:-400}
COMMON="--size $SIZE --steps 100000 --batch-size $BATCH $DEV"
S2="--lora-rank 0 --dropout 0.1 --time-masks 2"
stamp() { echo "$(date +%T) $*" >> $L/progress.log; }
run() { local gpu=$1 name=$2; shift 2; local t=$(date +%s)
  CUDA_VISIBLE_DEVICES=$gpu $PY "$@" > $L/$name.log 2>&1 || stamp "FAILED $name"; stamp "end $name $(( $(date +%s) - t ))s"; }
stamp start
$PY -c "import data; data.build_text(); data.whisper_checkpoint('tiny.en'); data.whisper_checkpoint('base')" > $L/prep.log 2>&1 || stamp "FAILED prep"
( t=$(date +%s); $PY data.py --size $SIZE --weights tiny.en > $L/corpus.log 2>&1 || stamp "FAILED corpus"; stamp "corpus done $(( $(date +%s) - t ))s" ) &
corpus=$!
run 0 s0-tiny train.py --stage 0 --whisper tiny.en --out-dir $CK/tiny0 --time-limit $T0 $COMMON $P0 &
s0a=$!
run 1 s0-base train.py --stage 0 --whisper ${WB:-base} --out-dir $CK/base0 --time-limit $T0 $COMMON $P0 &
s0b=$!
wait $corpus $s0a $s0b
cache() { CUDA_VISIBLE_DEVICES=$1 $PY -c "
import argparse, sys, torch, data, train, whisfusion as W
dev = 'cuda' if torch.cuda.is_available() else 'cpu'
model, _ = W.load_model(sys.argv[1], dev)
for split in ('train', 'dev'):
    train.AudioBatches(model, data.load_split(split, '$SIZE'), argparse.Namespace(no_cache=False, train_split=split), dev)
" $2 > $L/cache-$3.log 2>&1 || stamp "FAILED cache $3"; stamp "cache $3"; }
cache 0 $CK/tiny0/stage0.pt tiny & cache 1 $CK/base0/stage0.pt base & wait
variant() {  # gpu name stage0 t1 t2 lr1 lr2
  local gpu=$1 name=$2 init=$3 t1=$4 t2=$5 lr1=$6 lr2=$7
  mkdir -p $L/$name
  run $gpu $name.s1 train.py --stage 1 --init $CK/$init/stage0.pt --out-dir $CK/$name --time-limit $t1 --lr $lr1 $COMMON
  run $gpu $name.s2 train.py --stage 2 --out-dir $CK/$name --time-limit $t2 --lr $lr2 $COMMON $S2
  cp $CK/$name/stage*_log.csv $L/$name/ 2>/dev/null
  local base=""; [ $name = A ] && base="--baseline tiny.en base"
  # the evaluations at once on this GPU (their WERs do not depend on timing)
  run $gpu $name.eval-test decode.py --ckpt $CK/$name/stage2.pt --size $SIZE --eval test $base --out $L/$name $DEV &
  for split in test-unseen-voice real; do
    run $gpu $name.eval-$split decode.py --ckpt $CK/$name/stage2.pt --size $SIZE --eval $split --out $L/$name $DEV &
  done
  [ $name = B ] && run $gpu $name.ablate decode.py --ckpt $CK/$name/stage2.pt --size $SIZE --ablate dev --limit $LIMIT --out $L/$name $DEV &
  [ $name = A ] && run $gpu $name.eval-test-eager decode.py --ckpt $CK/$name/stage2.pt --size $SIZE --eval test \
      --no-cuda-graph --out $L/$name-eager $DEV &
  [ $name != B ] && run $gpu $name.eval-dev decode.py --ckpt $CK/$name/stage2.pt --size $SIZE --eval dev --limit $LIMIT --out $L/$name $DEV &
  wait
}
variant 0 A tiny0 $T1 $T2 1e-3 3e-4 &
variant 1 B base0 $T1 $T2 1e-3 3e-4 &
variant 2 C base0 ${T1C:-2.5} ${T2C:-6.5} 1e-3 3e-4 &
variant 3 D base0 $T1 $T2 1.5e-3 4.5e-4 &
wait
stamp "variants done"
cp -r checkpoints/lev2/*/stage*_log.csv $L/ 2>/dev/null
if [ -z "$DEV" ]; then
  # torchrun on 2 GPUs: every stage must exit by itself (issue: stage 1 once hung after its last checkpoint)
  ( for st in 1 2; do
      init=""; [ $st = 1 ] && init="--init $CK/tiny0/stage0.pt"
      t=$(date +%s)
      CUDA_VISIBLE_DEVICES=0,1 timeout 300 torchrun --nproc_per_node 2 train.py --stage $st $init --out-dir $CK/tr \
        --time-limit 0.5 $COMMON > $L/torchrun-s$st.log 2>&1; rc=$?
      stamp "torchrun stage $st rc=$rc $(( $(date +%s) - t ))s"
    done ) &
  ( CUDA_VISIBLE_DEVICES=2 $PY -m pytest -q tests/test_gpu.py > $L/test_gpu.log 2>&1; stamp "test_gpu rc=$?" ) &
  run 3 B.eval-test-full decode.py --ckpt $CK/B/stage2.pt --size $SIZE --eval test --canvas full --out $L/B-full &
  run 3 B.eval-test-vocab decode.py --ckpt $CK/B/stage2.pt --size $SIZE --eval test --output-vocab train --out $L/B-vocab &
  run 2 B.eval-dev-full decode.py --ckpt $CK/B/stage2.pt --size $SIZE --eval dev --limit $LIMIT --canvas full --out $L/B-dev-full &
  wait
  stamp "bench start"
  run 0 bench decode.py --ckpt $CK/B/stage2.pt --size $SIZE --bench --repeats ${REPEATS:-6} --out $L/bench
else  # CPU dry run of the same commands
  run 0 B.eval-test-full decode.py --ckpt $CK/B/stage2.pt --size $SIZE --eval test --canvas full --limit 4 --out $L/B-full $DEV
  run 0 bench decode.py --ckpt $CK/B/stage2.pt --size $SIZE --bench --repeats 1 --bench-batch 2 --limit 4 --out $L/bench $DEV
fi
stamp "all done"
touch $L/ALL_DONE
