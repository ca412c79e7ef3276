"""decode.py: PDD invariants, selection, determinism, long audio, evaluation, the Whisper baseline, bad input."""
import copy

import numpy as np
import pytest
import soundfile as sf
import torch

import data
import decode
import whisfusion as W
from conftest import CLIP, LIBRIVOX


@pytest.fixture()
def ctx(tiny_model):
    feats = tiny_model.embed_audio(data.log_mel(data.load_audio(CLIP))[None])
    return tiny_model.audio_context(feats, torch.tensor([200]))


def test_no_mask_survives_and_start_token_stays(tiny_model, ctx):
    tokens, scores = decode.generate(tiny_model, ctx, decode.DecodeOptions(candidates=4, steps=3))
    assert tokens.shape == (1, 4, tiny_model.cfg.decoder.canvas_len) and scores.shape == (1, 4)
    assert not (tokens == tiny_model.cfg.decoder.mask_id).any()
    assert (tokens[..., 0] == data.get_tokenizer().sot).all()
    assert ((scores > 0) & (scores <= 1)).all()


def test_candidates_share_one_audio_encoding(tiny_model):
    calls = {"kv": 0, "encoder": 0}
    tiny_model.blocks[0].cross_attn.kv_proj.register_forward_hook(lambda *a: calls.__setitem__("kv", calls["kv"] + 1))
    tiny_model.encoder.register_forward_hook(lambda *a: calls.__setitem__("encoder", calls["encoder"] + 1))
    decode.transcribe(tiny_model, [data.load_audio(CLIP)], decode.DecodeOptions(candidates=5, steps=4))
    assert calls == {"kv": 1, "encoder": 1}  # not K x S times


def test_selection_picks_the_highest_score_or_the_consensus():
    tok = data.get_tokenizer()
    texts = ["a b c", "a b d", "x y z"]
    tokens = torch.tensor([[data.make_canvas(t, 12) for t in texts]])
    scores = torch.tensor([[0.2, 0.3, 0.9]])
    assert decode.select(tokens, scores, decode.DecodeOptions(select="confidence")) == ["x y z"]
    assert decode.select(tokens, scores, decode.DecodeOptions(select="mbr")) == ["a b d"]
    assert tok.sot == tokens[0, 0, 0]


def test_decoding_is_deterministic_for_a_seed(tiny_model, ctx):
    opts = decode.DecodeOptions(candidates=3, steps=4, seed=7)
    a, b = decode.generate(tiny_model, ctx, opts), decode.generate(tiny_model, ctx, opts)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_generate_calls_the_decoder_pass_it_is_given(tiny_model, ctx):
    """GraphedPDD hands generate a compiled decoder pass: generate must call that one, once per step, and its
    output is all generate reads (the same pass gives the same tokens)."""
    calls = []

    def forward(tokens, c):
        calls.append(tokens.shape)
        return tiny_model(tokens, c)
    opts = decode.DecodeOptions(candidates=3, steps=4)
    tokens, scores = decode.generate(tiny_model, ctx, opts, forward=forward)
    ref_tokens, ref_scores = decode.generate(tiny_model, ctx, opts)
    assert torch.equal(tokens, ref_tokens) and torch.equal(scores, ref_scores)
    L = tiny_model.cfg.decoder.canvas_len
    assert calls == [(1, L)] + [(3, L)] * 3  # step 0 once per utterance, then the K candidates
    flipped = decode.generate(tiny_model, ctx, opts, forward=lambda t, c: -tiny_model(t, c))  # a different pass
    assert not torch.equal(flipped[0], ref_tokens)


@pytest.mark.parametrize("remask", ["random", "confidence"])
def test_variants_run(tiny_model, ctx, remask):
    opts = decode.DecodeOptions(candidates=3, steps=3, remask=remask, adaptive=True)
    tokens, _ = decode.generate(tiny_model, ctx, opts)
    assert tokens.shape[-1] <= tiny_model.cfg.decoder.canvas_len


def test_long_audio_is_windowed_and_joined_in_order(tiny_model, monkeypatch):
    """70 s made of three different clips: three 30 s windows, transcribed separately, joined in order."""
    seen = []

    def fake(model, feats, n_frames, opts, batch_size=16):
        seen.extend(n_frames.tolist())
        return [f"window{len(seen) - len(n_frames) + i}" for i in range(len(n_frames))]
    monkeypatch.setattr(decode, "transcribe_features", fake)
    audio = np.concatenate([np.resize(data.load_audio(CLIP), 16000 * 30), np.resize(data.load_audio(CLIP), 16000 * 40)])
    assert len(audio) == 70 * 16000
    assert decode.transcribe(tiny_model, [audio]) == ["window0 window1 window2"]
    assert seen == [1500, 1500, 500]


def test_empty_and_silent_audio_give_an_empty_transcript(tiny_model, tmp_path, capsys):
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    sf.write(tmp_path / "silent.wav", np.zeros(16000, np.float32), 16000)
    path = tmp_path / "m.pt"
    W.save_model(path, tiny_model)
    decode.main([str(tmp_path / "empty.wav"), str(tmp_path / "silent.wav"), "--ckpt", str(path), "-K", "2",
                 "--device", "cpu", "--out", str(tmp_path)])
    out = capsys.readouterr().out.splitlines()
    assert out == [f"{tmp_path / 'empty.wav'}\t", f"{tmp_path / 'silent.wav'}\t"]


def test_bad_input_errors(tiny_model, tmp_path):
    with pytest.raises(SystemExit, match="does not exist"):
        decode.main(["a.wav", "--ckpt", str(tmp_path / "missing.pt"), "--device", "cpu"])
    path = tmp_path / "m.pt"
    W.save_model(path, tiny_model)
    with pytest.raises(SystemExit, match="is a directory"):
        decode.main([str(tmp_path), "--ckpt", str(path), "--device", "cpu"])


def test_eval_writes_the_table(tiny_model, tmp_path, capsys):
    manifest = tmp_path / "three.tsv"
    clips = sorted(LIBRIVOX.glob("*.wav"))[:3]
    manifest.write_text("".join(f"{c}\tsome words {i}\n" for i, c in enumerate(clips)))
    path = tmp_path / "m.pt"
    W.save_model(path, tiny_model)
    decode.main(["--ckpt", str(path), "--eval", str(manifest), "-K", "2", "-S", "2", "--device", "cpu",
                 "--out", str(tmp_path / "res")])
    assert "corpus WER" in capsys.readouterr().out
    rows = (tmp_path / "res" / "three.csv").read_text().splitlines()
    assert len(rows) == 4 and rows[0].startswith("id,reference,whisfusion_hyp")


def test_whisper_baseline_with_the_converted_weights(tmp_path, real_manifest):
    res = decode.evaluate(None, str(real_manifest), decode.DecodeOptions(), "cpu", tmp_path / "b.csv",
                          baselines=["tiny.en"])
    corpus, mean_utt, repeated, _ = res["whisper-tiny.en"]
    assert corpus < 10 and repeated == 0  # about 4 % on these five LibriVox clips


def test_wer_uses_whisper_normaliser():
    corpus, mean_utt, per = decode.wer(["mister smith has ten dogs", "hello"], ["Mr. Smith has 10 dogs.", "yellow"])
    assert per == [0.0, 100.0] and corpus == pytest.approx(100 / 6) and mean_utt == 50.0


def reference_pdd(model, ctx, opts, noise):
    """PDD written the plain way (paper 3.1): K copies from the start, every step over all K rows."""
    cfg, K = model.cfg.decoder, opts.candidates
    ctx = ctx.repeat(K)
    canvas = torch.full((K, cfg.canvas_len), cfg.mask_id)
    canvas[:, 0] = data.get_tokenizer().sot
    for s in range(opts.steps):
        masked = noise[s] < opts.ratios[s] if opts.ratios[s] < 1 else torch.ones_like(canvas, dtype=torch.bool)
        masked[:, 0] = False
        probs = model(torch.where(masked, cfg.mask_id, canvas), ctx).float().softmax(-1)
        conf, pred = probs.max(-1)
        canvas = torch.where(masked, pred, canvas)
    keep = (canvas != data.get_tokenizer().eot).float()
    return canvas[None], ((conf * keep).sum(1) / keep.sum(1))[None]


def test_step0_runs_once_per_utterance_and_changes_nothing(tiny_model, ctx):
    """Step 0 re-masks everything, so its K inputs are identical: generate() runs it on one row per utterance,
    and must give exactly what K full rows give. (The reference also takes the softmax at every step, where
    generate() takes only the argmax before the last: same tokens, same scores.)"""
    opts = decode.DecodeOptions(candidates=5, steps=4, seed=3)
    noise = decode.draw_noise(opts, tiny_model.cfg.decoder.canvas_len, "cpu")
    rows = []
    hook = tiny_model.wte.register_forward_hook(lambda m, i, o: rows.append(i[0].shape[0]))
    with torch.no_grad():
        tokens, scores = decode.generate(tiny_model, ctx, opts, noise)
    hook.remove()
    assert rows == [1, 5, 5, 5]
    with torch.no_grad():
        ref_tokens, ref_scores = reference_pdd(tiny_model, ctx, opts, noise)
    assert torch.equal(tokens, ref_tokens)
    assert torch.allclose(scores, ref_scores, atol=1e-5)


def test_greedy_fill_is_the_softmax_max():
    logits = (torch.randn(3, 7, 50) * 4).bfloat16()  # as the model's output arrives under autocast
    ref_conf, ref_pred = logits.float().softmax(-1).max(-1)
    conf, pred = decode.greedy_fill(logits)
    assert torch.equal(pred, ref_pred) and torch.allclose(conf, ref_conf, rtol=1e-5)
    none, tokens = decode.greedy_fill(logits, confidence=False)  # the steps whose confidence nothing reads
    assert none is None and torch.equal(tokens, ref_pred)


@pytest.mark.parametrize("opts", [dict(steps=1), dict(remask="confidence"), dict(dedup=True), dict(adaptive=True),
                                  dict(steps=6, candidates=3)])
def test_skipping_the_softmax_where_nothing_reads_it_changes_nothing(tiny_model, ctx, monkeypatch, opts):
    """generate() takes only the argmax at the steps whose confidence no rule reads; with the softmax taken at
    every step instead, every option gives the same tokens and scores. The output layer is cut to three words
    (+ sot, eot), so neighbours often repeat and the duplicate rule has pairs to judge by their confidence."""
    model = decode.restrict_output(copy.deepcopy(tiny_model), [262, 264, 286])
    opts = decode.DecodeOptions(**{"candidates": 4, **opts})
    with torch.no_grad():
        tokens, scores = decode.generate(model, ctx, opts)
        full = decode.greedy_fill
        monkeypatch.setattr(decode, "greedy_fill", lambda logits, confidence=True: full(logits))  # always both
        ref_tokens, ref_scores = decode.generate(model, ctx, opts)
    assert torch.equal(tokens, ref_tokens) and torch.equal(scores, ref_scores)


def test_a_checkpoint_decodes_in_fp32_on_a_cpu(tiny_model, tmp_path):
    W.save_model(tmp_path / "m.pt", tiny_model)
    assert {p.dtype for p in decode.load_for_decoding(tmp_path / "m.pt", "cpu").parameters()} == {torch.float32}
    with pytest.raises(ValueError, match="fp32 only"):
        decode.load_for_decoding(tmp_path / "m.pt", "cpu", torch.bfloat16)


def test_mbr_risk_matches_the_written_out_edit_distance():
    rng = np.random.default_rng(0)
    cands = [list(rng.choice(["a", "b", "c", "d"], size=rng.integers(0, 9))) for _ in range(12)] + [["a", "b"]] * 3
    ref = [sum(decode.edit_distance(c, o) for o in cands) for c in cands]
    assert decode.mbr_risk(cands) == ref


def test_padded_audio_context_changes_no_logit(tiny_model):
    """The CUDA-graph path pads the audio context to a fixed bucket and masks the padding: same logits."""
    feats = tiny_model.embed_audio(data.log_mel(data.load_audio(CLIP))[None]).expand(2, -1, -1)
    n = torch.tensor([200, 130])
    canvas = torch.full((2, tiny_model.cfg.decoder.canvas_len), tiny_model.cfg.decoder.mask_id)
    with torch.no_grad():
        tight = tiny_model(canvas, tiny_model.audio_context(feats, n))
        padded = tiny_model(canvas, tiny_model.audio_context(feats, n, n_ctx=500))
    assert padded.shape == tight.shape and torch.allclose(tight, padded, atol=1e-4)


def test_cuda_graph_refuses_the_adaptive_canvas(tiny_model):
    with pytest.raises(ValueError, match="adaptive"):
        decode.GraphedPDD(tiny_model, decode.DecodeOptions(adaptive=True))
    assert not decode.use_cuda_graph("cpu", decode.DecodeOptions())
    assert not decode.use_cuda_graph("cuda", decode.DecodeOptions(adaptive=True))


def test_duplicates_picks_exactly_the_less_confident_of_each_repeated_pair():
    eot = 9
    canvas = torch.tensor([[0, 5, 5, 6, 7, 7, 7, eot, eot, eot]])
    conf = torch.tensor([[1.0, 0.9, 0.4, 0.8, 0.3, 0.6, 0.5, 0.9, 0.9, 0.9]])
    picked = decode.duplicates(canvas, conf, eot)
    # pair (1,2): 2 is weaker; pairs (4,5) and (5,6): 4 and 6 are the weaker ones; the eot padding is no repeat
    assert picked.nonzero()[:, 1].tolist() == [2, 4, 6]


def test_dedup_decoding_runs_and_stays_deterministic(tiny_model, ctx):
    opts = decode.DecodeOptions(candidates=3, steps=4, dedup=True)
    a, b = decode.generate(tiny_model, ctx, opts), decode.generate(tiny_model, ctx, opts)
    assert torch.equal(a[0], b[0]) and not (a[0] == tiny_model.cfg.decoder.mask_id).any()


def test_repeated_word_rate():
    assert decode.repeated_word_rate(["the the cat", "a b c d"]) == pytest.approx(100 * 1 / 7)
    assert decode.repeated_word_rate(["", "one"]) == 0.0


def test_candidates_share_the_audio_kv_exactly(tiny_model, ctx):
    """AudioContext.repeat copies nothing: cross-attention folds the K rows of an utterance into its queries.
    Same logits as K physical copies of the K/V (what repeat used to build)."""
    K, L = 3, tiny_model.cfg.decoder.canvas_len
    tokens = torch.randint(0, 1000, (2 * K, L))
    ctx2 = W.AudioContext([(torch.cat([k, k.flip(2)]), torch.cat([v, v.flip(2)])) for k, v in ctx.kv],
                          torch.tensor([[[[True] * 150 + [False] * 50]], [[[True] * 200]]]))  # 2 utterances
    copied = W.AudioContext([(W.repeat_rows(k, K), W.repeat_rows(v, K)) for k, v in ctx2.kv],
                            W.repeat_rows(ctx2.mask, K))
    with torch.no_grad():
        shared, ref = tiny_model(tokens, ctx2.repeat(K)), tiny_model(tokens, copied)
    assert ctx2.repeat(K).kv[0][0] is ctx2.kv[0][0]
    torch.testing.assert_close(shared, ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="repeat the audio context"):
        tiny_model(tokens, ctx2)


def test_canvas_length_follows_the_audio():
    model = type("M", (), {"cfg": W.PRESETS["default"]})()
    opts = decode.DecodeOptions()
    assert [decode.canvas_len(model, torch.tensor([f]), opts) for f in (50, 225, 500, 1500)] == [16, 48, 96, 128]
    assert decode.canvas_len(model, torch.tensor([50, 500]), opts) == 96  # the longest clip sets it
    assert decode.canvas_len(model, torch.tensor([50]), decode.DecodeOptions(canvas="full")) == 128
    groups = decode.canvas_groups(model, torch.tensor([500, 50, 60, 1500]), opts)
    assert [(L, idx.tolist()) for L, idx in groups] == [(16, [1, 2]), (96, [0]), (128, [3])]


def test_the_sized_canvas_holds_every_real_transcript(real_manifest):
    """TOKENS_PER_SECOND bounds real read speech (LibriVox, the card names, the commands) with room to spare."""
    model = type("M", (), {"cfg": W.PRESETS["default"]})()
    for u in data.load_split(str(real_manifest)):
        n_text = len(data.get_tokenizer().encode(" " + data.normalize_text(u.text)))
        frames = data.n_audio_frames(len(data.load_audio(u.audio)))
        assert n_text + 2 <= decode.canvas_len(model, torch.tensor([frames]), decode.DecodeOptions())  # sot, eot


def test_a_shorter_canvas_is_the_same_pdd_on_fewer_positions(tiny_model, ctx):
    """generate(length=L) is PDD on an L-position canvas with the first L positions of the same random draw:
    the written-out reference on that canvas gives the same tokens."""
    opts = decode.DecodeOptions(candidates=4, steps=4, seed=5)
    noise = decode.draw_noise(opts, tiny_model.cfg.decoder.canvas_len, "cpu")
    short = replace_canvas_len(tiny_model, 32)
    with torch.no_grad():
        tokens, scores = decode.generate(tiny_model, ctx, opts, noise, length=32)
        ref_tokens, ref_scores = reference_pdd(short, ctx, opts, noise[:, :, :32])
    assert tokens.shape == (1, 4, 32) and torch.equal(tokens, ref_tokens)
    assert torch.allclose(scores, ref_scores, atol=1e-5)


def replace_canvas_len(model, L):
    """The same model (shared weights) whose config says canvas_len = L (what reference_pdd reads)."""
    import copy
    short = copy.copy(model)
    short.cfg = W.WhisfusionConfig.from_dict(model.cfg.to_dict())
    short.cfg.decoder.canvas_len = L
    return short


def test_a_batch_grouped_by_canvas_gives_each_clip_its_own_transcript(tiny_model):
    """decode_batch splits a batch by canvas length; the random draw is the same for every utterance, so each
    clip's transcript is what decoding it alone gives (batch position and neighbours do not matter)."""
    clips = [data.load_audio(c) for c in sorted(LIBRIVOX.glob("*.wav"))[:3]]
    clips = [clips[0][:16000], clips[1], clips[2][:48000]]  # 1 s, a few s, 3 s: three canvas lengths
    opts = decode.DecodeOptions(candidates=3, steps=3)
    with torch.no_grad():  # larger random weights: each clip gets its own, audio-dependent transcript
        for name, p in tiny_model.named_parameters():
            if not name.startswith("encoder.") and p.dim() == 2:
                p.normal_(std=0.5)
    mel = torch.stack([data.log_mel(a) for a in clips])
    n = decode.frame_counts(clips)
    assert len(decode.canvas_groups(tiny_model, n, opts)) >= 2
    together = decode.decode_batch(tiny_model, mel, n, opts)
    alone = [decode.decode_batch(tiny_model, mel[i:i + 1], n[i:i + 1], opts)[0] for i in range(3)]
    assert together == alone and len(set(together)) == 3
    assert decode.transcribe(tiny_model, clips, opts) == together  # sorted by length inside, same order out


def test_a_restricted_output_layer_gives_the_full_heads_logits_over_its_ids(tiny_model, ctx):
    """restrict_output keeps the head rows of some ids: their logits are the full head's, so the
    greedy token is the full head's wherever that one is kept, and generate() writes only kept ids."""
    import copy
    tok = data.get_tokenizer()
    words = set(tok.encode(" he was not an ill disposed young man"))
    ids = sorted(words | {tok.sot, tok.eot})
    canvas = torch.full((1, tiny_model.cfg.decoder.canvas_len), tiny_model.cfg.decoder.mask_id)
    small = decode.restrict_output(copy.deepcopy(tiny_model), words)  # sot and eot are always kept
    assert small.head_ids.tolist() == ids and small.wte is not tiny_model.wte
    with torch.no_grad():
        full, cut = tiny_model(canvas, ctx), small(canvas, ctx)
    torch.testing.assert_close(cut, full[..., ids], rtol=1e-5, atol=1e-5)  # a narrower matmul: last bits
    best = full.argmax(-1)
    kept = torch.isin(best, torch.tensor(ids))
    assert torch.equal(small.head_ids[cut.argmax(-1)][kept], best[kept])
    tokens, _ = decode.generate(small, ctx, decode.DecodeOptions(candidates=2, steps=2))
    assert torch.isin(tokens, torch.tensor(ids)).all()


def test_bench_times_the_restricted_output_layer_on_a_copy(tiny_model, real_manifest, tmp_path):
    """`decode.py --bench` adds a row with the output layer cut to the training text's ids: it decodes with a
    restricted copy, so the full model it is compared with keeps its 51,864-way head."""
    from tools.bench import bench
    tok = data.get_tokenizer()
    utts = data.load_split(str(real_manifest))[:2]
    ids = {i for u in utts for i in tok.encode(" " + data.normalize_text(u.text))}
    n_out = len(ids | {tok.sot, tok.eot})
    r = bench(tiny_model, data.load_whisper("tiny.en", "cpu"), utts, decode.DecodeOptions(candidates=2, steps=2),
              "cpu", tmp_path / "bench.json", repeats=1, batch_size=2, vocab_ids=ids)
    name = f"eager, {n_out}-token output"
    assert len(tiny_model.head_ids) == tiny_model.cfg.decoder.vocab_size  # the compared model is untouched
    assert set(r["throughput"]["ratio_to_whisper"]) == {"eager", name}
    assert all(name in row["ms"] for row in r["latency_batch1"])
    assert f"{name} vs eager" in r["same_transcripts"] and (tmp_path / "bench.json").is_file()
    # the shapes it timed are printed and saved: the tiny preset on Whisper-tiny.en's encoder (4 layers x 384)
    assert r["model"] == {"decoder": "2 x 64", "encoder": "4 x 384", "whisper": "tiny.en"}
