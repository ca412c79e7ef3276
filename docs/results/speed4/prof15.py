"""Issue #15 profile (dev tool, not part of the project): where a batch-64 decode spends its time.
Untrained default preset on Whisper-base's encoder dims (timings do not depend on the weights), noise audio with
test-like lengths. Usage, from the repository root: python docs/results/speed4/prof15.py OUT_DIR
[--cpu-small] (on the GPU it ran on the code of commit e711f4c, as .device/bin/prof15.py)."""
import sys, json, time, math, functools
from dataclasses import replace
sys.path.insert(0, '.')
import numpy as np, torch
import data, decode, whisfusion as W
from tools.bench import time_interleaved, spread

out = sys.argv[1]
small = '--cpu-small' in sys.argv
dev = 'cpu' if small else 'cuda'
B = 4 if small else 64
R = 1 if small else 8
torch.manual_seed(0)
cfg = W.WhisfusionConfig.from_dict(W.PRESETS['default'].to_dict())
cfg.encoder = W.EncoderConfig(n_audio_state=512, n_audio_head=8, n_audio_layer=6)
if small:
    cfg.decoder = replace(cfg.decoder, n_layer=2, n_embd=64, n_head=2, n_mlp=176)
model = W.build_model(cfg).to(dev).eval()
W.merge_lora(model)
rng = np.random.default_rng(0)
secs = np.where(rng.random(B) < 0.08, rng.uniform(20, 30, B), rng.uniform(1.5, 10, B))
audios = [(0.05 * rng.standard_normal(int(s * 16000))).astype(np.float32) for s in secs]
nf = decode.frame_counts(audios)
opts = decode.DecodeOptions()
if small:
    opts = replace(opts, cuda_graph=False)
import whisper

def mels(batch):
    return torch.stack([whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(a).to(dev))) for a in batch])

graphed = decode.GraphedPDD(model, opts) if dev == 'cuda' else None
res = dict(card=torch.cuda.get_device_name() if dev == 'cuda' else 'cpu', audio_seconds=float(secs.sum()))
mel = mels(audios)
groups = decode.canvas_groups(model, nf, opts)
res['groups'] = [(L, len(i)) for L, i in groups]

def gpu_only():
    outs = []
    for L, idx in groups:
        if graphed:
            outs.append(graphed(mel[idx.to(dev)], nf[idx]))
        else:
            with decode.autocast(dev):
                ctx = model.audio_context(model.embed_audio(mel[idx.to(dev)]), nf[idx])
                outs.append(decode.generate(model, ctx, opts, length=L))
    return outs

outs = gpu_only()
cpu_outs = [(t.cpu(), s.cpu()) for t, s in outs]

def select_only():
    for t, s in cpu_outs:
        decode.select(t, s, opts)

def enc(m):
    def f():
        with decode.autocast(dev):
            m.embed_audio(mel)
    return f

tcfg = replace(cfg, encoder=W.EncoderConfig())
tiny = W.build_model(tcfg).to(dev).eval()
fns = dict(mel=lambda: mels(audios), full=lambda: decode.decode_batch(model, mels(audios), nf, opts, graphed),
           gpu_only=gpu_only, select_only=select_only, encoder_base=enc(model), encoder_tiny=enc(tiny))
t = time_interleaved(fns, dev, repeats=R, warmup=1)
res['ms'] = {k: spread(v) for k, v in t.items()}
print(json.dumps(res, indent=1), flush=True)

# per-group GPU time (graph replays, synced)
per = {}
for L, idx in groups:
    m = mel[idx.to(dev)]
    if graphed:
        per[f'L={L} n={len(idx)}'] = spread(time_interleaved({'g': lambda: graphed(m, nf[idx])}, dev, R, 1)['g'])
res['per_group_ms'] = per
print(json.dumps(per, indent=1), flush=True)

# eager kernel profile of one generate over all 64 clips at one canvas (L=64, context 500 frames)
from torch.profiler import profile, ProfilerActivity
acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev == 'cuda' else [])
nf6 = torch.full((B,), 500 if not small else 50)
with torch.no_grad(), decode.autocast(dev):
    feats = model.embed_audio(mel)
    def gen():
        ctx = model.audio_context(feats, nf6, 500)
        return decode.generate(model, ctx, opts, length=64)
    gen(); gen()
    if dev == 'cuda': torch.cuda.synchronize()
    with profile(activities=acts) as prof:
        gen()
        if dev == 'cuda': torch.cuda.synchronize()
key = 'cuda_time_total' if dev == 'cuda' else 'cpu_time_total'
table = prof.key_averages().table(sort_by=key, row_limit=40)
print(table)
open(f'{out}/prof_eager.txt', 'w').write(table)
json.dump(res, open(f'{out}/prof15.json', 'w'), indent=1)

# ---- experiments (same process, interleaved): each a full batch-64 decode_batch-like call
import copy
exp = {}
def pipelined(g=graphed):
    pend = []
    for L, idx in decode.canvas_groups(model, nf, opts):
        tok, sc = g(mel[idx.to(dev)], nf[idx]) if g else gpu_only()[0]
        ht, hs = torch.empty(tok.shape, dtype=tok.dtype, pin_memory=dev == 'cuda'), torch.empty(sc.shape, dtype=sc.dtype, pin_memory=dev == 'cuda')
        ht.copy_(tok, non_blocking=True); hs.copy_(sc, non_blocking=True)
        ev = torch.cuda.Event() if dev == 'cuda' else None
        if ev: ev.record()
        pend.append((idx, ht, hs, ev))
    texts = [''] * len(mel)
    for idx, ht, hs, ev in pend:
        if ev: ev.synchronize()
        for j, t in zip(idx.tolist(), decode.select(ht, hs, opts)):
            texts[j] = t
    return texts
fns = dict(current=lambda: decode.decode_batch(model, mel, nf, opts, graphed), pipelined=pipelined)
def with_bucket(b):
    def f():
        old = decode.CANVAS_BUCKET; decode.CANVAS_BUCKET = b
        try: return decode.decode_batch(model, mel, nf, opts, graphed)
        finally: decode.CANVAS_BUCKET = old
    return f
for b in (32, 64):
    fns[f'bucket{b}'] = with_bucket(b)
if dev == 'cuda':
    mb = copy.deepcopy(model).to(torch.bfloat16)
    gb = decode.GraphedPDD(mb, opts)
    fns['bf16 weights'] = lambda: decode.decode_batch(mb, mel, nf, opts, gb)
    try:
        t0 = time.time()
        mc = copy.deepcopy(model)
        for blk in mc.blocks:
            blk.forward = torch.compile(blk.forward, dynamic=False)
        gc = decode.GraphedPDD(mc, opts)
        decode.decode_batch(mc, mel, nf, opts, gc)
        exp['compile_s'] = round(time.time() - t0, 1)
        fns['compiled blocks'] = lambda: decode.decode_batch(mc, mel, nf, opts, gc)
    except Exception as e:
        exp['compile_error'] = repr(e)[:500]
texts = {k: f() for k, f in fns.items()}
exp['same_as_current'] = {k: sum(a == b for a, b in zip(texts['current'], v)) for k, v in texts.items()}
t = time_interleaved(fns, dev, repeats=R, warmup=1)
exp['ms'] = {k: spread(v) for k, v in t.items()}
res['experiments'] = exp
print(json.dumps(exp, indent=1), flush=True)
json.dump(res, open(f'{out}/prof15.json', 'w'), indent=1)
