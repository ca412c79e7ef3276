"""Issue #15 (dev tool): torch.compile inside the CUDA graphs (`decode.compiled`), side by side with the graphs
recorded without it, in one process: ms per batch of 64 (decode_batch from a log-mel computed beforehand), batch-1
ms for a 3 s and a 25 s clip, first-call seconds (compilation + capture), identical transcripts, and how close the
numbers are (encoder K/V and decoder logits, compiled against eager PyTorch). Variants: the new default (encoder and
decoder compiled, eager numerics emulated), the decoder alone compiled, and Inductor's own numerics (no emulation).
Untrained `default` preset on Whisper-base's encoder shape in bf16, noise audio of test-like lengths (prof17's).
Usage, from the repository root: python docs/results/speed7/prof18.py OUT_DIR [--cpu-small]"""
import json, sys, time
from dataclasses import replace
sys.path.insert(0, '.')
import numpy as np, torch
import data, decode, whisfusion as W
from tools.bench import time_interleaved, spread
out = sys.argv[1]; small = '--cpu-small' in sys.argv
dev = 'cpu' if small else 'cuda'; B = 4 if small else 64; R = 1 if small else 8; EXTRA = 1 if small else 4
torch.manual_seed(0)
cfg = W.WhisfusionConfig.from_dict(W.PRESETS['default'].to_dict())
if small: cfg.decoder = replace(cfg.decoder, n_layer=2, n_embd=64, n_head=2, n_mlp=176)
model = W.build_model(cfg).to(dev).eval(); W.merge_lora(model)
model = model.to(torch.bfloat16 if dev == 'cuda' else torch.float32)
def noise_clips(seed, n):
    rng = np.random.default_rng(seed)
    secs = np.where(rng.random(n) < 0.08, rng.uniform(20, 30, n), rng.uniform(1.5, 10, n))
    return [(0.05 * rng.standard_normal(int(s * 16000))).astype(np.float32) for s in secs]
audios = noise_clips(0, B)
nf = decode.frame_counts(audios); mel = data.log_mel_batch(audios, dev)
opts = decode.DecodeOptions()
res = dict(card=torch.cuda.get_device_name() if dev == 'cuda' else 'cpu', batch=B, torch=torch.__version__)
print(res, flush=True)

class Eager:  # the CPU dry run: GraphedPDD's body without the graph
    def __init__(self, g): self.g = g
    def __call__(self, mel, n_frames):
        return self.g._body(mel, n_frames.to(mel.device), decode.draw_noise(self.g.opts, model.cfg.decoder.canvas_len, mel.device),
                            self.g.n_ctx(n_frames), decode.canvas_len(model, n_frames, self.g.opts))
    def __getattr__(self, k): return getattr(self.g, k)
def graphed(o, encode=None, forward=None):
    g = decode.GraphedPDD(model, o)
    if encode is not None: g.encode, g.forward = encode(g), forward
    if dev == 'cpu':
        g = Eager(g)
    return g
def run(g, m=None, n=None):
    m = mel if m is None else m; n = nf if n is None else n
    if dev == 'cpu':  # decode_batch's grouping, without graphs
        texts = [''] * len(m)
        for _, idx in decode.canvas_groups(model, n, opts):
            tokens, scores = g(m[idx], n[idx])
            for j, t in zip(idx.tolist(), decode.select(tokens, scores, opts)): texts[j] = t
        return texts
    return decode.decode_batch(model, m, n, opts, g)
inductor = lambda fn: torch.compile(fn, dynamic=True)  # Inductor's own numerics: intermediates kept in fp32
V = {'not compiled': graphed(replace(opts, compile=False)),
     'compiled (default)': graphed(opts),
     'compiled, decoder only': graphed(opts, encode=lambda g: g._encode, forward=decode.compiled(model.forward)),
     'compiled, Inductor numerics': graphed(opts, encode=lambda g: inductor(g._encode), forward=inductor(model.forward))}
texts, first = {}, {}
for k, g in V.items():
    t0 = time.time(); texts[k] = run(g); first[k] = round(time.time() - t0, 1)
    print(f'{k}: first call {first[k]} s', flush=True)
res['first_call_s'] = first
res['same_as_not_compiled'] = {k: sum(a == b for a, b in zip(texts['not compiled'], v)) for k, v in texts.items()}
# more noise batches: not compiled vs the default
same = total = 0
for seed in range(1, 1 + EXTRA):
    a = noise_clips(seed, B); n = decode.frame_counts(a); m = data.log_mel_batch(a, dev)
    x, y = run(V['not compiled'], m, n), run(V['compiled (default)'], m, n)
    same += sum(p == q for p, q in zip(x, y)); total += len(x)
res['extra_batches_same'] = f'{same}/{total}'
print('extra batches, default vs not compiled, identical transcripts:', res['extra_batches_same'], flush=True)
# numbers: the audio K/V of block 0 and the decoder's logits on one masked canvas, compiled vs eager PyTorch
# (autocast as inside the graphs, cache_enabled=False: under another autocast state Dynamo recompiles, and in the
# first run that recompilation hit its limit (8), so the compiled passes ran eagerly and that run's logit numbers
# compared eager with eager; its K/V numbers were compiled against eager)
amp = torch.autocast('cuda', torch.bfloat16, cache_enabled=False) if dev == 'cuda' else decode.nullcontext()
with torch.no_grad(), amp:
    n_ctx = V['not compiled'].n_ctx(nf)
    ref_ctx = V['not compiled']._encode(mel, nf.to(dev), n_ctx)
    L = 64; g = torch.Generator().manual_seed(0)
    canvas = torch.randint(0, 50000, (B, L), generator=g).to(dev); canvas[:, 0] = data.get_tokenizer().sot
    canvas = torch.where(torch.rand(B, L, generator=g).to(dev) < 0.8, cfg.decoder.mask_id, canvas)
    ref = model(canvas, ref_ctx).float()
    num = {}
    for k in ['compiled (default)', 'compiled, Inductor numerics']:
        G = V[k]
        c = G.encode(mel, nf.to(dev), n_ctx)
        kv = (c.kv[0][0].float() - ref_ctx.kv[0][0].float()).abs()
        lo = G.forward(canvas, ref_ctx).float()  # the same audio context: the decoder pass alone
        num[k] = dict(kv_equal=bool(torch.equal(c.kv[0][0], ref_ctx.kv[0][0])), kv_max_abs_diff=float(kv.max()),
                      kv_share_equal=float((kv == 0).float().mean()),
                      logits_equal=bool(torch.equal(lo, ref)), logits_max_abs_diff=float((lo - ref).abs().max()),
                      logits_rel_l2=float((lo - ref).norm() / ref.norm()),
                      argmax_agree=float((lo.argmax(-1) == ref.argmax(-1)).float().mean()))
        print(k, num[k], flush=True)
    res['numbers'] = num
# time: batch of 64 and batch 1 (3 s, 25 s), interleaved
T = {k: (lambda g=g: run(g)) for k, g in V.items()}
t = time_interleaved(T, dev, repeats=R, warmup=1)
res['ms_batch'] = {k: spread(v) for k, v in t.items()}
for k, v in res['ms_batch'].items():
    print(f"  batch {B}: {k:30s} {v['median']:8.1f} ms [{v['min']:.1f}-{v['max']:.1f}]  same as not compiled {res['same_as_not_compiled'][k]}/{B}", flush=True)
res['ms_batch1'] = {}
for s in (3.0, 25.0):
    a = [(0.05 * np.random.default_rng(7).standard_normal(int(s * 16000))).astype(np.float32)]
    n1 = decode.frame_counts(a); m1 = data.log_mel_batch(a, dev)
    sel = {k: V[k] for k in ['not compiled', 'compiled (default)']}
    t = time_interleaved({k: (lambda g=g: run(g, m1, n1)) for k, g in sel.items()}, dev, repeats=R * 3, warmup=2)
    res['ms_batch1'][f'{s:g} s'] = {k: spread(v) for k, v in t.items()}
    for k, v in res['ms_batch1'][f'{s:g} s'].items():
        print(f"  batch 1, {s:g} s: {k:30s} {v['median']:8.2f} ms [{v['min']:.2f}-{v['max']:.2f}]", flush=True)
json.dump(res, open(f'{out}/prof18.json', 'w'), indent=1)
print('done')
