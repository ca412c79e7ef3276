#!/usr/bin/env bash
# 2026-11-27 fourth sitting on a 2-GPU machine (background, setsid): most of the 20-minute budget, two variants.
# Env: SIZE, T0/T1/T2, BATCH, LIMIT; CPU dry run: DEV='--device cpu' P0='--preset tiny' SIZE=small WB=tiny.en T0=0.05 ...
set -u
cd "$(dirname "$0")/../.."
[ -f .device/bin/env.sh ] && source .device/bin/env.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
L=${L:-$HOME/lev4}; mkdir -p $L
PY=${PY:-python3}; SIZE=${SIZE:-default}; T0=${T0:-2}; T1=${T1:-7}; T2=${T2:-7}; BATCH=${BATCH:-256}
P0=${P0:-}; DEV=${DEV:-}; CK=checkpoints/lev4; LIMIT=${LIMIT:-400}; WB=${WB:-base}
COMMON="--size $SIZE --steps 100000 --batch-size $BATCH $DEV"
S2="--lora-rank 0 --dropout 0.1 --time-masks 2"
stamp() { echo "$(date +%T) $*" >> $L/progress.log; }
run() { local gpu=$1 name=$2; shift 2; local t=$(date +%s)
  CUDA_VISIBLE_DEVICES=$gpu $PY "$@" > $L/$name.log 2>&1 || stamp "FAILED $name"; stamp "end $name $(( $(date +%s) - t ))s"; }
stamp start
$PY -c "import data; data.build_text(); data.whisper_checkpoint('tiny.en'); data.whisper_checkpoint('$WB')" > $L/prep.log 2>&1 || stamp "FAILED prep"
( t=$(date +%s); $PY data.py --size $SIZE --weights tiny.en > $L/corpus.log 2>&1 || stamp "FAILED corpus"; stamp "corpus done $(( $(date +%s) - t ))s" ) &
corpus=$!
run 0 s0 train.py --stage 0 --whisper $WB --out-dir $CK/s0 --time-limit $T0 $COMMON $P0 &
wait
# the encoder features once per speed, one GPU each, before the variants start (they then load them)
cache() { CUDA_VISIBLE_DEVICES=$1 $PY -c "
import sys, torch, data, train, whisfusion as W
dev = 'cuda' if torch.cuda.is_available() else 'cpu'
model, _ = W.load_model(sys.argv[1], dev)
speed = float(sys.argv[2])
utts = data.speed_perturbed(data.load_split('train', '$SIZE'), (speed,))
train.AudioBatches(model, [u for u in utts if u.speed == speed], 'train', dev)
if speed == 1: train.AudioBatches(model, data.load_split('dev', '$SIZE'), 'dev', dev)
" $CK/s0/stage0.pt $2 > $L/cache-$2.log 2>&1 || stamp "FAILED cache $2"; stamp "cache $2"; }
cache 0 1 & cache 1 0.9 & cache 0 1.1 & wait
variant() {  # gpu name lr1 lr2 extra...
  local gpu=$1 name=$2 lr1=$3 lr2=$4; shift 4
  mkdir -p $L/$name
  run $gpu $name.s1 train.py --stage 1 --init $CK/s0/stage0.pt --out-dir $CK/$name --time-limit $T1 --lr $lr1 $COMMON "$@"
  run $gpu $name.s2 train.py --stage 2 --out-dir $CK/$name --time-limit $T2 --lr $lr2 $COMMON $S2 "$@"
  cp $CK/$name/stage*_log.csv $L/$name/ 2>/dev/null
  local base=""; [ $name = E ] && base="--baseline tiny.en base"
  OMP_NUM_THREADS=2 run $gpu $name.eval-test decode.py --ckpt $CK/$name/stage2.pt --size $SIZE --eval test $base --out $L/$name $DEV &
  for split in test-unseen-voice real; do
    OMP_NUM_THREADS=2 run $gpu $name.eval-$split decode.py --ckpt $CK/$name/stage2.pt --size $SIZE --eval $split --out $L/$name $DEV &
  done
  OMP_NUM_THREADS=2 run $gpu $name.eval-dev decode.py --ckpt $CK/$name/stage2.pt --size $SIZE --eval dev --limit $LIMIT --out $L/$name $DEV &
  for split in test test-unseen-voice real; do
    OMP_NUM_THREADS=2 run $gpu $name.eval-$split-S8 decode.py --ckpt $CK/$name/stage2.pt --size $SIZE --eval $split -S 8 --out $L/$name-S8 $DEV &
  done
  OMP_NUM_THREADS=2 run $gpu $name.eval-dev-S8 decode.py --ckpt $CK/$name/stage2.pt --size $SIZE --eval dev --limit $LIMIT -S 8 --out $L/$name-S8 $DEV &
  wait
  stamp "variant $name done"
}
variant 0 E 1e-3 3e-4 &
variant 1 G 1e-3 3e-4 --speed-perturb 0.9,1.1 &
wait
stamp "variants done"
if [ -z "$DEV" ]; then
  stamp "bench start"
  run 0 bench decode.py --ckpt $CK/E/stage2.pt --size $SIZE --bench --repeats ${REPEATS:-5} --out $L/bench
else  # CPU dry run of the same command
  run 0 bench decode.py --ckpt $CK/E/stage2.pt --size $SIZE --bench --repeats 1 --bench-batch 2 --limit 4 --out $L/bench $DEV
fi
stamp "all done"
touch $L/ALL_DONE
