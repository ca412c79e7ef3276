"""whisfusion.py: shapes, the real encoder, [MASK], bidirectionality, K/V reuse, losses, LoRA, checkpoints."""
import copy

import pytest
import torch

import data
import whisfusion as W
from conftest import LIBRIVOX, expected_param_counts


def test_shapes_and_parameter_counts(tiny_model, tiny_cfg):
    d = tiny_cfg.decoder
    mel = torch.randn(2, 80, 3000)
    feats = tiny_model.embed_audio(mel)
    assert feats.shape == (2, 1500, 384)
    ctx = tiny_model.audio_context(feats, torch.tensor([300, 1500]))
    assert ctx.kv[0][0].shape == (2, d.n_head, 1500, d.n_embd // d.n_head) and ctx.mask.shape == (2, 1, 1, 1500)
    tokens = torch.randint(0, d.vocab_size, (2, d.canvas_len))
    assert tiny_model(tokens, ctx).shape == (2, d.canvas_len, d.vocab_size)
    counts, expected = W.param_counts(tiny_model), expected_param_counts(tiny_cfg)
    print(counts)
    for part in ("encoder", "adapter", "decoder"):
        assert counts[part] == expected[part], part
    r, C = tiny_cfg.lora.rank, d.n_embd
    assert counts["lora"] == d.n_layer * r * (C + 3 * C + C + C + 3 * (C + d.n_mlp))


def test_presets_and_their_lora():
    """The default preset (the GPU recipe) and the cpu one train the whole decoder in stage 2, as the paper
    does (no LoRA); the tiny test preset keeps rank-4 LoRA, so its path stays tested. Adapter: per block the
    cross-attention (q, k, v, out) and its norm, plus the audio projection where the widths differ."""
    assert W.LoRAConfig().rank == 0 and W.PRESETS["default"].lora.rank == 0 and W.PRESETS["cpu"].lora.rank == 0
    assert W.PRESETS["tiny"].lora.rank == 4
    assert set(W.PRESETS) == {"tiny", "default", "cpu"}
    d = W.PRESETS["default"]
    assert d.encoder.n_audio_state == d.decoder.n_embd == 512  # Whisper-base: no projection needed
    assert expected_param_counts(d)["adapter"] == 8 * (4 * 512 * 512 + 512)
    cpu = W.PRESETS["cpu"]
    assert expected_param_counts(cpu)["adapter"] == 4 * (4 * 128 * 128 + 128) + 384 * 128
    model = W.build_model(W.WhisfusionConfig.from_dict(cpu.to_dict()))
    assert not W.lora_modules(model) and not any("lora_" in n for n, _ in model.named_parameters())
    counts = W.param_counts(model)
    assert counts["lora"] == 0 and counts["adapter"] == expected_param_counts(cpu)["adapter"]


def test_encoder_equals_openai_whisper(tiny_model, tiny_en_path):
    import whisper
    ref = whisper.load_model(str(tiny_en_path), device="cpu")
    mel = data.log_mel(data.load_audio(LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0870.wav"))[None]
    torch.testing.assert_close(tiny_model.embed_audio(mel), ref.encoder(mel.float()), rtol=1e-4, atol=1e-4)
    assert all(not p.requires_grad for p in tiny_model.encoder.parameters())
    tiny_model.train()
    assert not tiny_model.encoder.training  # frozen encoder stays in eval mode


def test_mask_is_never_predicted(tiny_model, tiny_cfg):
    d = tiny_cfg.decoder
    assert d.mask_id == d.vocab_size and tiny_model.wte.num_embeddings == d.vocab_size + 1
    logits = tiny_model(torch.full((2, d.canvas_len), d.mask_id))
    assert logits.shape[-1] == d.vocab_size  # there is no logit for [MASK]


def test_decoder_is_bidirectional(tiny_model, tiny_cfg):
    x = torch.randint(0, 1000, (1, tiny_cfg.decoder.canvas_len))
    y = x.clone()
    y[0, -1] = (x[0, -1] + 1) % 1000  # change only the last token
    assert not torch.allclose(tiny_model(x)[0, 0], tiny_model(y)[0, 0])  # the first position sees it


def test_audio_kv_reuse_equals_recompute(tiny_model, tiny_cfg):
    feats = torch.randn(1, 200, 384)
    tokens = torch.randint(0, 1000, (5, tiny_cfg.decoder.canvas_len))
    shared = tiny_model(tokens, tiny_model.audio_context(feats).repeat(5))
    recomputed = tiny_model(tokens, tiny_model.audio_context(feats.expand(5, -1, -1)))
    torch.testing.assert_close(shared, recomputed)


def test_padding_frames_are_ignored(tiny_model, tiny_cfg):
    feats = torch.randn(2, 300, 384)
    other = feats.clone()
    other[0, 100:] = torch.randn(200, 384)  # only frames past utterance 0's audio change
    n = torch.tensor([100, 300])
    tokens = torch.randint(0, 1000, (2, tiny_cfg.decoder.canvas_len))
    a = tiny_model(tokens, tiny_model.audio_context(feats, n))
    b = tiny_model(tokens, tiny_model.audio_context(other, n))
    torch.testing.assert_close(a[0], b[0])


def test_rmsnorm_and_rope_are_the_written_formulas():
    torch.manual_seed(0)
    norm = W.RMSNorm(16)
    norm.weight.data = torch.rand(16) + 0.5
    x = torch.randn(3, 5, 16) * 3
    torch.testing.assert_close(norm(x), x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * norm.weight)
    cos, sin = W.rope_cache(5, 8, 10000.0)
    q = torch.randn(2, 5, 8)
    z = torch.complex(q[..., :4], q[..., 4:]) * torch.polar(torch.ones(5, 4), torch.atan2(sin[:, :4], cos[:, :4]))
    torch.testing.assert_close(W.apply_rope(q, cos, sin), torch.cat([z.real, z.imag], -1))


def test_time_masks_zero_whole_frames_inside_the_audio():
    torch.manual_seed(0)
    feats = torch.ones(4, 300, 8)
    n = torch.tensor([100, 300, 50, 200])
    out = W.time_mask(feats, 3, 25, n)
    zero = out.eq(0).all(-1)  # (B, Ta): whole frames, never part of one
    assert torch.equal(out.eq(0).any(-1), zero)
    assert not (zero & (torch.arange(300) >= n[:, None])).any()  # never in the padding
    assert zero.sum(1).le(75).all() and zero.sum() > 0
    assert torch.equal(W.time_mask(feats, 0, 25, n), feats)


def test_regularisers_act_in_training_only(tiny_cfg, tiny_en_state):
    cfg = W.WhisfusionConfig.from_dict(tiny_cfg.to_dict())
    cfg.decoder.dropout, cfg.adapter.time_masks = 0.1, 2
    model = W.build_model(cfg, tiny_en_state[1])
    feats, tokens = torch.randn(2, 100, 384), torch.randint(0, 1000, (2, cfg.decoder.canvas_len))
    model.eval()
    torch.testing.assert_close(model(tokens, model.audio_context(feats)), model(tokens, model.audio_context(feats)))
    model.train()
    assert not torch.allclose(model(tokens, model.audio_context(feats)), model(tokens, model.audio_context(feats)))


def test_forward_process_masks_with_probability_t_never_the_start():
    torch.manual_seed(0)
    x0 = torch.randint(0, 100, (4, 2000))
    t = torch.tensor([0.1, 0.5, 0.9, 1.0])
    xt, masked = W.forward_process(x0, t, mask_id=999)
    assert not masked[:, 0].any() and (xt[masked] == 999).all() and (xt[~masked] == x0[~masked]).all()
    torch.testing.assert_close(masked[:, 1:].float().mean(1), t, atol=0.03, rtol=0)


def test_losses_only_see_masked_positions_and_elbo_weight_is_one_over_t():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 10, requires_grad=True)
    x0 = torch.randint(0, 10, (2, 6))
    masked = torch.zeros(2, 6, dtype=torch.bool)
    masked[0, 2] = masked[1, 4] = True
    W.masked_token_loss(logits, x0, masked).backward()
    assert (logits.grad[~masked] == 0).all() and (logits.grad[masked] != 0).all()
    t = torch.tensor([0.25, 0.5])
    ce = torch.nn.functional.cross_entropy(logits[masked], x0[masked], reduction="none")
    expected = (ce[0] / 0.25 + ce[1] / 0.5) / x0.numel()
    torch.testing.assert_close(W.elbo_loss(logits, x0, masked, t), expected)


def test_logits_at_masked_positions_only_give_the_same_losses_and_gradients(tiny_model):
    """model(x_t, where=masked) computes the head only where the loss looks: same losses, same gradients."""
    torch.manual_seed(0)
    x0 = torch.randint(0, 1000, (3, tiny_model.cfg.decoder.canvas_len))
    t = W.sample_mask_ratio(3)
    xt, masked = W.forward_process(x0, t, tiny_model.cfg.decoder.mask_id)
    for loss_fn in (lambda lg: W.masked_token_loss(lg, x0, masked), lambda lg: W.elbo_loss(lg, x0, masked, t)):
        grads = []
        for where in (None, masked):
            tiny_model.zero_grad()
            loss = loss_fn(tiny_model(xt, where=where))
            loss.backward()
            grads.append((loss.detach(), tiny_model.lm_head.weight.grad.clone()))
        assert tiny_model(xt, where=masked).shape == (int(masked.sum()), tiny_model.lm_head.out_features)
        torch.testing.assert_close(grads[0][0], grads[1][0])
        torch.testing.assert_close(grads[0][1], grads[1][1])


def test_lora_identity_merge_and_freezing(tiny_model, tiny_cfg):
    tokens = torch.randint(0, 1000, (2, tiny_cfg.decoder.canvas_len))
    plain = W.Whisfusion(tiny_cfg)
    plain.load_state_dict({k: v for k, v in tiny_model.state_dict().items() if "lora_" not in k})
    torch.testing.assert_close(tiny_model(tokens), plain.eval()(tokens))  # B = 0: LoRA starts as the identity
    for m in W.lora_modules(tiny_model):
        torch.nn.init.normal_(m.lora_B, std=0.05)
        assert not m.weight.requires_grad
    unmerged = tiny_model(tokens)
    before = copy.deepcopy(tiny_model.state_dict())
    tiny_model.train().eval()
    assert all(torch.equal(before[k], v) for k, v in tiny_model.state_dict().items())  # .eval() rewrites nothing
    W.merge_lora(tiny_model)
    torch.testing.assert_close(tiny_model(tokens), unmerged, rtol=1e-4, atol=1e-4)
    W.unmerge_lora(tiny_model)
    torch.testing.assert_close(tiny_model(tokens), unmerged, rtol=1e-5, atol=1e-5)


def test_trainable_sets_per_stage(tiny_model):
    def trainable():
        return {n for n, p in tiny_model.named_parameters() if p.requires_grad}
    W.set_trainable(tiny_model, 1)
    assert trainable() and all(W.is_adapter(n) for n in trainable())
    W.set_trainable(tiny_model, 2)
    assert trainable() == {n for n, _ in tiny_model.named_parameters() if W.is_adapter(n) or "lora_" in n}
    W.set_trainable(tiny_model, 0)
    assert not any(W.is_adapter(n) or n.startswith("encoder.") for n in trainable())


def test_checkpoint_round_trip_and_config_mismatch(tiny_model, tiny_cfg, tmp_path):
    path = tmp_path / "m.pt"
    W.save_model(path, tiny_model, stage=1)
    model, ckpt = W.load_model(path, expect=tiny_cfg)
    assert ckpt["stage"] == 1
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in tiny_model.state_dict().items())
    other = W.WhisfusionConfig.from_dict(tiny_cfg.to_dict())
    other.decoder.n_layer, other.lora.rank = 3, 8
    with pytest.raises(ValueError, match=r"decoder.n_layer: 3 != 2.*lora.rank: 8 != 4"):
        W.load_model(path, expect=other)
    with pytest.raises(FileNotFoundError, match="python train.py --stage 0"):
        W.load_model(tmp_path / "missing.pt")


def test_tiny_model_overfits_one_batch_of_real_speech(tiny_model, real_manifest):
    torch.manual_seed(0)
    utts = data.load_split(str(real_manifest))
    mel, n_frames, x0 = data.collate([data.SpeechDataset(utts, 64, train=False)[i] for i in range(len(utts))])
    feats = tiny_model.embed_audio(mel)
    for name, p in tiny_model.named_parameters():  # the whole decoder + adapter, as in the paper's stage 2
        p.requires_grad = not name.startswith("encoder.")
    opt = torch.optim.AdamW([p for p in tiny_model.parameters() if p.requires_grad], lr=3e-3)
    tiny_model.train()
    losses = []
    for step in range(250):
        t = W.sample_mask_ratio(len(x0))
        xt, masked = W.forward_process(x0, t, tiny_model.cfg.decoder.mask_id)
        loss = W.masked_token_loss(tiny_model(xt, tiny_model.audio_context(feats, n_frames)), x0, masked)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    print(f"masked-token loss {first:.3f} -> {last:.3f}")
    assert last <= 0.1 * first
