"""Issue #15, next steps (dev tool): (A) batch 64: the previous launch path (indices copied from pageable memory,
log-mel clip by clip) against pinned copies and the batched log-mel, side by side; (B) batch 1: where the time of
a short and a long clip goes (log-mel, graph replay, candidate selection; GPU time of the replay by CUDA events),
for the sized and the full canvas; (C) a kernel table of one eager batch-1 decode of a 3 s and a 25 s clip.
Untrained `default` preset on Whisper-base's encoder shape, bf16 as load_for_decoding, noise audio.
Usage, from the repository root: python docs/results/speed5/prof16.py OUT_DIR [--cpu-small]"""
import sys, json, time, statistics
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
model = W.build_model(cfg).to(dev).eval(); W.merge_lora(model)
model = model.to(torch.bfloat16 if dev == 'cuda' else torch.float32)
rng = np.random.default_rng(0)
secs = np.where(rng.random(B) < 0.08, rng.uniform(20, 30, B), rng.uniform(1.5, 10, B))
audios = [(0.05 * rng.standard_normal(int(s * 16000))).astype(np.float32) for s in secs]
nf = decode.frame_counts(audios)
opts = decode.DecodeOptions()
full = replace(opts, canvas='full')
import whisper
def mel_per_clip(batch):  # the previous benchmark's front end
    return torch.stack([whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(a).to(dev))) for a in batch])
def mel_batched(batch):
    return data.log_mel_batch(batch, dev)
pinned = decode.to_device
def pageable(t, device):
    return t.to(device)
graphed = decode.GraphedPDD(model, opts) if dev == 'cuda' else None
graphed_full = decode.GraphedPDD(model, full) if dev == 'cuda' else None
def run(mels, copy, batch=audios, g=graphed, o=opts):
    decode.to_device = copy
    try:
        return decode.decode_batch(model, mels(batch), decode.frame_counts(batch), o, g)
    finally:
        decode.to_device = pinned
res = dict(card=torch.cuda.get_device_name() if dev == 'cuda' else 'cpu', audio_seconds=float(secs.sum()), batch=B,
           torch=torch.__version__)
# (A) batch 64
A = {'previous: per-clip log-mel, pageable index copies': lambda: run(mel_per_clip, pageable),
     'per-clip log-mel, pinned copies': lambda: run(mel_per_clip, pinned),
     'batched log-mel, pinned copies (new)': lambda: run(mel_batched, pinned),
     'log-mel alone, per clip': lambda: mel_per_clip(audios),
     'log-mel alone, batched': lambda: mel_batched(audios)}
texts = {k: f() for k, f in list(A.items())[:3]}
first = list(texts)[0]
res['A_same_as_previous'] = {k: sum(a == b for a, b in zip(texts[first], v)) for k, v in texts.items()}
res['A_mel_max_abs_diff'] = float((mel_per_clip(audios) - mel_batched(audios)).abs().max())
t = time_interleaved(A, dev, repeats=R, warmup=1)
res['A_ms'] = {k: spread(v) for k, v in t.items()}
print(f"(A) batch {B}, {secs.sum():.0f} s of audio, {res['card']}")
for k, v in res['A_ms'].items():
    print(f"  {k:55s} {v['median']:8.1f} ms [{v['min']:.1f}-{v['max']:.1f}]  same {res['A_same_as_previous'].get(k, '-')}")
print(f"  log-mel max abs difference, batched vs per clip: {res['A_mel_max_abs_diff']:.2e}")
# (B) batch 1: components per length
def sync():
    if dev == 'cuda': torch.cuda.synchronize()
res['B'] = []
for s in (3.0, 8.0, 15.0, 25.0):
    a = (0.05 * np.random.default_rng(int(s)).standard_normal(int(s * 16000))).astype(np.float32)
    n = decode.frame_counts([a]); mel = mel_batched([a])
    row = dict(seconds=s)
    for name, g, o in (('sized', graphed, opts), ('full', graphed_full, full)):
        tok, sc = (g(mel, n) if g else decode.generate(model, model.audio_context(model.embed_audio(mel), n), o,
                                                           length=decode.canvas_len(model, n, o)))
        tc, sc_ = tok.cpu(), sc.cpu()
        fns = {'total': lambda: run(mel_batched, pinned, [a], g, o),
               'log-mel': lambda: mel_batched([a]),
               'graph replay (+ clone)': (lambda: g(mel, n)) if g else (lambda: None),
               'select': lambda: decode.select(tc, sc_, o)}
        tt = time_interleaved(fns, dev, repeats=4 * R, warmup=2)
        row[name] = {k: round(statistics.median(v), 3) for k, v in tt.items()}
        if g:  # GPU time of one replay, by CUDA events
            ev = [torch.cuda.Event(enable_timing=True) for _ in range(2)]
            gpu = []
            for _ in range(10):
                ev[0].record(); g(mel, n); ev[1].record(); torch.cuda.synchronize(); gpu.append(ev[0].elapsed_time(ev[1]))
            row[name]['gpu (events)'] = round(statistics.median(gpu), 3)
        row[name]['L'] = decode.canvas_len(model, n, o)
        row[name]['distinct candidates'] = len(set(map(tuple, tc[0].tolist())))
    res['B'].append(row)
    print(f"(B) {s:4.0f} s: sized {row['sized']}\n          full  {row['full']}")
# (C) eager kernel tables
if dev == 'cuda':
    from torch.profiler import profile, ProfilerActivity
    tables = []
    for s in (3.0, 25.0):
        a = (0.05 * np.random.default_rng(int(s)).standard_normal(int(s * 16000))).astype(np.float32)
        n = decode.frame_counts([a]); mel = mel_batched([a])
        eo = replace(opts, cuda_graph=False)
        for _ in range(3): run(mel_batched, pinned, [a], None, eo)
        sync()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
            run(mel_batched, pinned, [a], None, eo); sync()
        tables.append(f"=== eager batch 1, {s:.0f} s clip\n" + p.key_averages().table(sort_by='cuda_time_total', row_limit=25))
    open(f'{out}/prof16_eager.txt', 'w').write('\n\n'.join(tables))
json.dump(res, open(f'{out}/prof16.json', 'w'), indent=1)
print("done")
