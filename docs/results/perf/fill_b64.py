import torch, time
print(torch.__version__)
try:
    import triton; print("triton", triton.__version__)
except Exception as e: print("no triton", e)
def fill(logits):
    top, pred = logits.max(-1)
    return (logits.float() - top[..., None].float()).exp().sum(-1).reciprocal(), pred
def inplace(logits):
    top, pred = logits.max(-1)
    return logits.sub_(top[..., None]).exp_().sum(-1, dtype=torch.float32).reciprocal(), pred
cf = torch.compile(fill, dynamic=True)
lg = (torch.randn(960, 128, 51865, device="cuda") * 3).bfloat16()
t0 = time.time(); c1, p1 = cf(lg); torch.cuda.synchronize(); print("compile s", time.time() - t0)
c2, p2 = inplace(lg.clone())
print("max abs diff", (c1 - c2).abs().max().item(), "pred equal", torch.equal(p1, p2))
def ev(fn, r=5):
    fn(); torch.cuda.synchronize(); s = torch.cuda.Event(enable_timing=True); e = torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(r): fn()
    e.record(); torch.cuda.synchronize(); return s.elapsed_time(e) / r
print("compiled ms", ev(lambda: cf(lg)))
print("inplace ms (incl clone)", ev(lambda: inplace(lg.clone())), "clone", ev(lambda: lg.clone()))
lg2 = lg[:, :64].contiguous()
t0 = time.time(); cf(lg2); torch.cuda.synchronize(); print("2nd shape s", time.time() - t0)
g = torch.cuda.CUDAGraph(); s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
with torch.cuda.stream(s): cf(lg)
torch.cuda.current_stream().wait_stream(s)
with torch.cuda.graph(g): out = cf(lg)
g.replay(); torch.cuda.synchronize(); print("graph ok", torch.equal(out[1], p1))
