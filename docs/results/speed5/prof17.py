"""Issue #15 (dev tool): where a batch of 64 spends its GPU time now (eager kernel table of the decoder, bf16
weights), and two candidate changes timed side by side with the current graph path: RMSNorm on the bf16 stream
without the fp32 round trip, and torch.compile of each decoder block (fused element-wise kernels).
Untrained `default` preset on Whisper-base's encoder shape, noise audio of test-like lengths.
Usage, from the repository root: python docs/results/speed5/prof17.py OUT_DIR [--cpu-small]"""
import sys, json
from dataclasses import replace
sys.path.insert(0, '.')
import numpy as np, torch, torch.nn.functional as F
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
mel = data.log_mel_batch(audios, dev)
opts = decode.DecodeOptions()
res = dict(card=torch.cuda.get_device_name() if dev == 'cuda' else 'cpu', batch=B, torch=torch.__version__)
# (1) eager kernel table
if dev == 'cuda':
    from torch.profiler import profile, ProfilerActivity
    eo = replace(opts, cuda_graph=False)
    for _ in range(2): decode.decode_batch(model, mel, nf, eo)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as p:
        decode.decode_batch(model, mel, nf, eo); torch.cuda.synchronize()
    open(f'{out}/prof17_eager64.txt', 'w').write(p.key_averages().table(sort_by='cuda_time_total', row_limit=40, max_name_column_width=90))
# (2) RMSNorm on bf16 directly: same numbers?
x = (torch.randn(4096, 512, device=dev) * 3).to(torch.bfloat16 if dev == 'cuda' else torch.float32)
n = W.RMSNorm(512).to(dev).to(x.dtype); n.weight.data.uniform_(0.5, 1.5)
ref = n(x); direct = F.rms_norm(x, (512,), n.weight, n.eps)
res['rmsnorm_direct_equal'] = bool(torch.equal(ref, direct)); res['rmsnorm_direct_maxdiff'] = float((ref.float() - direct.float()).abs().max())
print('rms_norm on bf16 directly equal:', res['rmsnorm_direct_equal'], res['rmsnorm_direct_maxdiff'])
orig_norm = W.RMSNorm.forward
def direct_norm(self, x):
    return F.rms_norm(x, (x.shape[-1],), self.weight.to(x.dtype), self.eps)
G = (lambda: decode.GraphedPDD(model, opts)) if dev == 'cuda' else (lambda: None)
g_now = G(); texts = {'current': decode.decode_batch(model, mel, nf, opts, g_now)}
W.RMSNorm.forward = direct_norm
g_norm = G(); texts['rmsnorm on bf16'] = decode.decode_batch(model, mel, nf, opts, g_norm)
W.RMSNorm.forward = orig_norm
import copy
cmodel = copy.deepcopy(model)
for b in cmodel.blocks:
    b.forward = torch.compile(b.forward, dynamic=True)
g_comp = decode.GraphedPDD(cmodel, opts) if dev == 'cuda' else None
import time; t0 = time.time()
texts['compiled blocks'] = decode.decode_batch(cmodel, mel, nf, opts, g_comp)
res['compile_first_call_s'] = round(time.time() - t0, 1)
res['same_as_current'] = {k: sum(a == b for a, b in zip(texts['current'], v)) for k, v in texts.items()}
def with_norm(fn):
    def f():
        W.RMSNorm.forward = direct_norm
        try: return fn()
        finally: W.RMSNorm.forward = orig_norm
    return f
V = {'current': lambda: decode.decode_batch(model, mel, nf, opts, g_now),
     'rmsnorm on bf16': with_norm(lambda: decode.decode_batch(model, mel, nf, opts, g_norm)),
     'compiled blocks': lambda: decode.decode_batch(cmodel, mel, nf, opts, g_comp)}
t = time_interleaved(V, dev, repeats=R, warmup=1)
res['ms'] = {k: spread(v) for k, v in t.items()}
for k, v in res['ms'].items():
    print(f"  {k:30s} {v['median']:8.1f} ms [{v['min']:.1f}-{v['max']:.1f}]  same as current {res['same_as_current'][k]}/{B}")
print('compile, first call:', res['compile_first_call_s'], 's')
json.dump(res, open(f'{out}/prof17.json', 'w'), indent=1)
print('done')
