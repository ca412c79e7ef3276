"""Training-step throughput on random data of TinySpeech's shape (dev tool, not part of the project)."""
import sys, time, json, torch
sys.path.insert(0, '.')
import train, whisfusion as W
dev = 'cuda' if torch.cuda.is_available() else 'cpu'
STEPS = int(sys.argv[1]) if len(sys.argv) > 1 else 40
N = 4000
g = torch.Generator().manual_seed(0)
long = torch.rand(N, generator=g) < 0.08
frames = torch.where(long, torch.randint(1000, 1500, (N,), generator=g), torch.randint(100, 750, (N,), generator=g))
flat = torch.randn(int(frames.sum()), 384, generator=g).half().to(dev)
start = (torch.cumsum(frames, 0) - frames).to(dev)
nf = frames.to(dev)
canvas = torch.randint(0, 50000, (N, 128), generator=g).to(dev)

def old_gather(idx):
    n = nf[idx]
    rows = [flat[s:s + k] for s, k in zip(start[idx].tolist(), n.tolist())]
    return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True), n

def run(name, batch, stage=1, new=True, compile=False, steps=STEPS, rank=None):
    torch.manual_seed(0)
    cfg = W.WhisfusionConfig.from_dict(W.PRESETS['default'].to_dict())
    if rank is not None: cfg.lora.rank = rank
    model = W.build_model(cfg).to(dev)
    W.set_trainable(model, stage)
    lo, hi = train.STAGE_DEFAULTS[stage]['mask']
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=dev == 'cuda')
    fwd = torch.compile(model) if compile else model
    shards = train.Shards(N, batch, 0, 0, 1, frames if new else None)
    amp = torch.autocast('cuda', torch.bfloat16) if dev == 'cuda' else torch.autocast('cpu', torch.bfloat16)
    model.train()
    t0 = None
    frames_seen = 0
    for step in range(steps + 8):
        if step == 8:
            torch.cuda.synchronize() if dev == 'cuda' else None
            t0 = time.time()
        idx = shards.batch_at(step).to(dev)
        if new:
            n = nf[idx]; feats = train.gather_frames(flat, start[idx], n, multiple=64)
        else:
            feats, n = old_gather(idx)
        x0 = canvas[idx]
        t = W.sample_mask_ratio(len(idx), lo, hi, device=dev)
        xt, masked = W.forward_process(x0, t, model.cfg.decoder.mask_id)
        with amp:
            ctx = model.audio_context(feats, n, n_ctx=feats.shape[1])
            logits = fwd(xt, ctx, where=masked) if new else fwd(xt, ctx)
            loss = W.masked_token_loss(logits, x0, masked)
            loss.backward()
        loss.item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        opt.step(); opt.zero_grad(set_to_none=True)
        if step >= 8: frames_seen += feats.shape[1] * len(idx)
    torch.cuda.synchronize() if dev == 'cuda' else None
    dt = time.time() - t0
    r = dict(name=name, batch=batch, stage=stage, steps_per_s=round(steps / dt, 2), utt_per_s=round(steps * batch / dt),
             padded_frames_per_utt=round(frames_seen / steps / batch),
             peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 1) if dev == 'cuda' else 0)
    print(json.dumps(r), flush=True)
    if dev == 'cuda': torch.cuda.reset_peak_memory_stats()
    return r

def lora0():
    cfg = W.WhisfusionConfig.from_dict(W.PRESETS['default'].to_dict()); cfg.lora.rank = 0; return cfg

if __name__ == '__main__':
    print(torch.cuda.get_device_name() if dev=="cuda" else "cpu")
    run('warm', 256, 1, steps=60)
    for b in (128, 256, 384):
        run('new', b, 1, steps=80); run('new-full', b, 2, rank=0, steps=80)
    run('old', 128, 1, new=False, steps=80); run('old-full', 128, 2, new=False, rank=0, steps=80)
