"""Issue #15, step 2 (dev tool): the old batched path against each change, side by side, batch 64.
Untrained default preset (Whisper-base encoder dims), noise audio of test-like lengths. Usage, from the
repository root: python docs/results/speed4/prof15b.py OUT_DIR [--cpu-small] (ran on the GPU as .device/bin/prof15b.py
with the decoder of commit 16a376c)."""
import sys, json, copy
from dataclasses import replace
sys.path.insert(0, '.')
import numpy as np, torch
import data, decode, whisfusion as W
from tools.bench import time_interleaved, spread
out = sys.argv[1]; small = '--cpu-small' in sys.argv
dev = 'cpu' if small else 'cuda'; B = 4 if small else 64; R = 1 if small else 8
torch.manual_seed(0)
cfg = W.WhisfusionConfig.from_dict(W.PRESETS['default'].to_dict())
cfg.encoder = W.EncoderConfig(n_audio_state=512, n_audio_head=8, n_audio_layer=6)
if small: cfg.decoder = replace(cfg.decoder, n_layer=2, n_embd=64, n_head=2, n_mlp=176)
m32 = W.build_model(cfg).to(dev).eval(); W.merge_lora(m32)
m16 = copy.deepcopy(m32).to(torch.bfloat16 if dev == "cuda" else torch.float32)
rng = np.random.default_rng(0)
secs = np.where(rng.random(B) < 0.08, rng.uniform(20, 30, B), rng.uniform(1.5, 10, B))
audios = [(0.05 * rng.standard_normal(int(s * 16000))).astype(np.float32) for s in secs]
nf = decode.frame_counts(audios)
opts = decode.DecodeOptions()
import whisper
mel = torch.stack([whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(a).to(dev))) for a in audios])
G = (lambda m: decode.GraphedPDD(m, opts)) if dev == 'cuda' else (lambda m: None)
orig_fill = decode.greedy_fill
def fill_always(logits, confidence=True):
    return orig_fill(logits)
def serial(m, g):  # the previous decode_batch: read back each group before launching the next
    texts = [''] * len(mel)
    for _, idx in decode.canvas_groups(m, nf, opts):
        tokens, scores = g(mel[idx.to(dev)], nf[idx]) if g else decode.generate(m, m.audio_context(m.embed_audio(mel[idx]), nf[idx]), opts)
        for j, t in zip(idx.tolist(), decode.select(tokens.cpu(), scores.cpu(), opts)):
            texts[j] = t
    return texts
variants = {}
decode.greedy_fill = fill_always  # graphs captured now keep the softmax at every step
g_old32 = G(m32); g_old16 = G(m16)
variants['before (fp32 weights, softmax every step, serial)'] = lambda: serial(m32, g_old32)
serial(m32, g_old32); serial(m16, g_old16); decode.decode_batch(m32, mel, nf, opts, g_old32)
decode.greedy_fill = orig_fill
g_new32 = G(m32); g_new16 = G(m16)
variants['+ pipelined'] = lambda: decode.decode_batch(m32, mel, nf, opts, g_old32)
variants['+ argmax-only steps'] = lambda: decode.decode_batch(m32, mel, nf, opts, g_new32)
variants['+ bf16 weights (new default)'] = lambda: decode.decode_batch(m16, mel, nf, opts, g_new16)
variants['bf16 weights only, serial'] = lambda: serial(m16, g_old16)
small16 = decode.restrict_output(copy.deepcopy(m16), range(21513))
g_small = G(small16)
variants['new default, 21,513-token output'] = lambda: decode.decode_batch(small16, mel, nf, opts, g_small)
texts = {k: f() for k, f in variants.items()}
first = list(texts)[0]
res = dict(card=torch.cuda.get_device_name() if dev == 'cuda' else 'cpu', audio_seconds=float(secs.sum()), batch=B,
           same_as_before={k: sum(a == b for a, b in zip(texts[first], v)) for k, v in texts.items()},
           same_as_pipelined={k: sum(a == b for a, b in zip(texts['+ pipelined'], v)) for k, v in texts.items()})
t = time_interleaved(variants, dev, repeats=R, warmup=1)
res['ms'] = {k: spread(v) for k, v in t.items()}
for k, v in res['ms'].items():
    print(f"{k:50s} {v['median']:8.1f} ms [{v['min']:.1f}-{v['max']:.1f}]  same as before {res['same_as_before'][k]}/{B}")
json.dump(res, open(f'{out}/prof15b.json', 'w'), indent=1)
