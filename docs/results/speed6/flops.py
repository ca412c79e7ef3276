"""Issue #15, why batch-1 latency is not flat: the work of one batch-1 decode per length bucket of `--bench`.

The same clips as `decode.py --bench` (the first 5 of each length bucket of the `default` test split, whose
manifest is the argument) on the untrained `default` preset (the work depends only on the shapes): for each clip
its canvas length L and audio context n_ctx as GraphedPDD sizes them, the matrix-product FLOPs of the audio K/V
and the S decoding steps counted by torch's FlopCounterMode on the CPU, and the attention FLOPs counted by hand
(4 * Lq * Lk * n_embd per layer and canvas row: QK^T and PV, self-attention over the canvas, cross-attention over
n_ctx frames). The encoder (the same 30 s window for every clip) is left out: it is the same for every length.

    PYTHONPATH=. python docs/results/speed6/flops.py /tmp/flops/default/test.tsv > docs/results/speed6/flops.log

As run (2026-11-27, the 2-core CPU machine): the test split synthesised there as in ../speed5/plan.sh, root
/tmp/flops/default (1,682 s; the GPU machine's, with other TTS voices installed, was 1,632 s, so a few clips
differ in length; the bench's selection rule, first 5 per bucket, on this split). First at commit 019b992, whose
`default` preset had a tiny.en-shaped encoder (a 384 -> 512 audio projection the trained model lacks: 0.1-0.5
GFLOP more per clip); flops.log is the run at commit 2590932, with Whisper-base's encoder shape."""
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

import data
import decode as D
import whisfusion as W

torch.manual_seed(0)
model = W.Whisfusion(W.PRESETS["default"]).eval()
opts, d = D.DecodeOptions(), model.cfg.decoder
graphed = D.GraphedPDD(model, opts)  # for its n_ctx rule (250-frame buckets); building one needs no GPU
with torch.no_grad():
    feats = model.embed_audio(torch.zeros(1, 80, 3000))
utts = data.read_manifest(Path(sys.argv[1]))
rows_per_step = [1] + [opts.candidates] * (opts.steps - 1)  # step 0 re-masks everything: one row per utterance
e = model.cfg.encoder
print(f"default preset: {d.n_layer} layers x {d.n_embd}, output {len(model.head_ids)} ids, encoder {e.n_audio_state} "
      f"wide ({e.n_audio_layer} layers, not counted); K={opts.candidates} S={opts.steps}: {sum(rows_per_step)} "
      f"canvas rows per clip")
print(f"{'bucket':8s} {'clip':12s} {'s':>6s} {'L':>4s} {'n_ctx':>5s} {'matmul':>8s} {'attn':>6s} {'GFLOP':>7s}")
with torch.no_grad():
    for lo, hi in [(0, 5), (5, 10), (10, 20), (20, 30)]:
        for u in [u for u in utts if lo <= u.seconds < hi][:5]:
            n = D.frame_counts([data.load_audio(u.audio)])  # as the bench counts them
            n_ctx, L = graphed.n_ctx(n), D.canvas_len(model, n, opts)
            with FlopCounterMode(display=False) as fc:
                D.generate(model, model.audio_context(feats, n, n_ctx), opts, None, L)
            mm = fc.get_total_flops()
            attn = 4 * L * (L + n_ctx) * d.n_embd * d.n_layer * sum(rows_per_step)
            print(f"{lo}-{hi} s".ljust(8), f"{u.id:12s} {u.seconds:6.2f} {L:4d} {n_ctx:5d} {mm / 1e9:8.1f} "
                  f"{attn / 1e9:6.1f} {(mm + attn) / 1e9:7.1f}")
