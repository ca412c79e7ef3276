"""decode.py: PDD invariants, generate_fast == generate, selection, determinism, long audio, evaluation, the
Whisper baseline, loading checkpoints, bad input."""
import copy
import dataclasses

import numpy as np
import pytest
import soundfile as sf
import torch

import data
import decode
import whisfusion as W
from conftest import CLIP, LIBRIVOX
from tools.bench import restrict_output


@pytest.fixture()
def ctx(tiny_model):
    feats = tiny_model.embed_audio(data.log_mel(data.load_audio(CLIP))[None])
    return tiny_model.audio_context(feats, torch.tensor([200]))


def lively(model):
    """Larger random weights (in place): the tiny model's tokens then depend on the audio and on the tokens kept
    (its freshly initialised weights fill every position with one token), so the K candidates differ."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.startswith("encoder.") and p.dim() == 2:
                p.normal_(std=0.5)
    return model


def test_no_mask_survives_and_start_token_stays(tiny_model, ctx):
    tokens, scores = decode.generate(tiny_model, ctx, decode.DecodeOptions(candidates=4, steps=3))
    assert tokens.shape == (1, 4, tiny_model.cfg.decoder.canvas_len) and scores.shape == (1, 4)
    assert not (tokens == tiny_model.cfg.decoder.mask_id).any()
    assert (tokens[..., 0] == data.get_tokenizer().sot).all()
    assert ((scores > 0) & (scores <= 1)).all()


def test_remasking_follows_the_schedule_and_never_touches_the_start_token(tiny_model, ctx):
    """Step s hands the decoder every position whose noise is below r_s as [MASK] (all of them at step 0, 70 %
    past the paper's four steps), position 0 never."""
    opts = decode.DecodeOptions(candidates=3, steps=6, seed=1)
    assert [decode.remask_ratio(opts, s) for s in range(6)] == [1.0, 0.9, 0.85, 0.8, 0.7, 0.7]
    L = tiny_model.cfg.decoder.canvas_len
    noise = decode.draw_noise(opts, L, "cpu")
    seen = []
    tiny_model.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    decode.generate(tiny_model, ctx, opts, noise=noise)
    mask_id = tiny_model.cfg.decoder.mask_id
    for s, inp in enumerate(seen):
        expect = noise[s] < decode.remask_ratio(opts, s)
        expect[:, 0] = False
        assert torch.equal(inp == mask_id, expect), s
        assert (inp[:, 0] == data.get_tokenizer().sot).all()


@pytest.mark.parametrize("opts", [dict(candidates=1), dict(candidates=3, steps=1), dict(candidates=2, steps=8),
                                  dict(candidates=5, steps=2, ratios=(1.0, 0.5))])
def test_variants_run(tiny_model, ctx, opts):
    """K and S variants (and a custom schedule) decode the whole canvas: no [MASK] survives, the shapes hold."""
    opts = decode.DecodeOptions(**opts)
    for gen in (decode.generate, decode.generate_fast):
        tokens, scores = gen(tiny_model, ctx, opts)
        assert tokens.shape == (1, opts.candidates, tiny_model.cfg.decoder.canvas_len)
        assert scores.shape == (1, opts.candidates)
        assert not (tokens == tiny_model.cfg.decoder.mask_id).any()


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
    lively(tiny_model)
    opts = decode.DecodeOptions(candidates=3, steps=4, seed=7)
    for gen in (decode.generate, decode.generate_fast):
        a, b = gen(tiny_model, ctx, opts), gen(tiny_model, ctx, opts)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    other = decode.generate(tiny_model, ctx, decode.DecodeOptions(candidates=3, steps=4, seed=8))
    assert not torch.equal(a[0], other[0])  # the seed is what draws the re-masking


@pytest.fixture()
def two_clips(tiny_model):
    """lively(tiny_model) and the audio context of two utterances of different lengths (a batch: B = 2)."""
    lively(tiny_model)
    clips = [data.load_audio(CLIP), data.load_audio(sorted(LIBRIVOX.glob("*.wav"))[0])[:16000]]
    mel = torch.stack([data.log_mel(a) for a in clips])
    with torch.no_grad():
        return tiny_model.audio_context(tiny_model.embed_audio(mel), decode.frame_counts(clips))


@pytest.mark.parametrize("case", [dict(candidates=1), dict(candidates=4), dict(candidates=4, steps=1),
                                  dict(candidates=3, steps=6), dict(candidates=4, length=32),
                                  dict(candidates=4, select="confidence"), dict(candidates=4, restricted=True)],
                         ids=["K=1", "K=4", "S=1", "S=6", "L=32", "confidence", "restricted-output"])
def test_generate_fast_gives_the_tokens_of_generate(tiny_model, two_clips, case):
    """generate is the paper's loop written plainly (K canvases from step 0, the softmax at every step);
    generate_fast runs step 0 once per utterance and takes the confidence only after the last step: the same
    tokens and (up to float rounding) the same scores, so the same transcripts, for every option. Two
    utterances in the batch: the rows of candidate k of utterance b line up in both."""
    case = dict(case)
    length, restricted = case.pop("length", None), case.pop("restricted", False)
    model = tiny_model
    if restricted:  # the output layer cut to three words (+ sot, eot): head rows mapped back to Whisper ids
        model = restrict_output(copy.deepcopy(tiny_model), [262, 264, 286])
    opts = decode.DecodeOptions(**case)
    tokens, scores = decode.generate(model, two_clips, opts, length=length)
    fast_tokens, fast_scores = decode.generate_fast(model, two_clips, opts, length=length)
    L = length or model.cfg.decoder.canvas_len
    assert tokens.shape == (2, opts.candidates, L) and scores.shape == (2, opts.candidates)
    assert torch.equal(fast_tokens, tokens)
    assert torch.allclose(fast_scores, scores, rtol=1e-5)
    assert decode.select(fast_tokens, fast_scores, opts) == decode.select(tokens, scores, opts)
    assert not torch.equal(tokens[0], tokens[1])  # the two utterances decode differently: the test can tell
    if opts.candidates > 1 and opts.steps > 1:  # and the candidates part ways: the test sees the noise's rows
        assert len({tuple(r) for r in tokens[0].tolist()}) > 1
    if restricted:
        assert torch.isin(tokens, model.head_ids).all()


def test_generate_fast_calls_the_decoder_pass_it_is_given(tiny_model, two_clips):
    """GraphedPDD hands generate_fast a compiled decoder pass: generate_fast must call that one, once per step
    (step 0 on one row per utterance, then the K candidates), and its output is all generate_fast reads (the
    same pass gives the same tokens). generate runs every step on all K rows."""
    calls, rows = [], []

    def forward(tokens, c):
        calls.append(tokens.shape)
        return tiny_model(tokens, c)
    opts = decode.DecodeOptions(candidates=3, steps=4)
    tokens, scores = decode.generate_fast(tiny_model, two_clips, opts, forward=forward)
    ref_tokens, ref_scores = decode.generate_fast(tiny_model, two_clips, opts)
    assert torch.equal(tokens, ref_tokens) and torch.equal(scores, ref_scores)
    L = tiny_model.cfg.decoder.canvas_len
    assert calls == [(2, L)] + [(6, L)] * 3  # B = 2 rows at step 0, then B * K
    flipped = decode.generate_fast(tiny_model, two_clips, opts, forward=lambda t, c: -tiny_model(t, c))
    assert not torch.equal(flipped[0], ref_tokens)  # a different pass, different tokens
    hook = tiny_model.wte.register_forward_hook(lambda m, i, o: rows.append(i[0].shape[0]))
    decode.generate(tiny_model, two_clips, opts)
    hook.remove()
    assert rows == [6] * 4  # the plain loop: K canvases per utterance from the start


def test_greedy_fill_is_the_softmax_max():
    logits = (torch.randn(3, 7, 50) * 4).bfloat16()  # as the model's output arrives under autocast
    ref_conf, ref_pred = logits.float().softmax(-1).max(-1)
    conf, pred = decode.greedy_fill(logits)
    assert conf.dtype == torch.float32
    assert torch.equal(pred, ref_pred) and torch.allclose(conf, ref_conf, rtol=1e-5)


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
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"{tmp_path / 'empty.wav'}\t", f"{tmp_path / 'silent.wav'}\t"]
    assert "empty.wav: no speech (empty)" in err and "silent.wav: no speech (silent" in err
    assert "never drops" not in err  # no speech: the one warning, not the steady-noise one too


def test_speech_has_pauses_and_steady_noise_does_not(tiny_model, tmp_path, capsys):
    """has_pauses: speech rises and falls; 3 s of white noise (or a held tone) does not, and transcribing it
    says so on stderr (the transcript would be invented words); the speech clip next to it gets no warning."""
    noise = np.random.default_rng(0).normal(0, 0.1, 48000).astype(np.float32)
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(48000) / 16000)).astype(np.float32)
    assert all(decode.has_pauses(data.load_audio(c)) for c in sorted(LIBRIVOX.glob("*.wav")))
    assert decode.has_pauses(data.load_audio(CLIP))
    assert not decode.has_pauses(noise) and not decode.has_pauses(tone)
    assert decode.has_pauses(noise[:4000])  # a quarter second: too short to tell, no warning
    sf.write(tmp_path / "noise.wav", noise, 16000)
    path = tmp_path / "m.pt"
    W.save_model(path, tiny_model)
    decode.main([str(tmp_path / "noise.wav"), str(CLIP), "--ckpt", str(path), "-K", "2", "-S", "2",
                 "--device", "cpu", "--out", str(tmp_path)])
    out, err = capsys.readouterr()
    assert [line.split("\t")[0] for line in out.splitlines()] == [str(tmp_path / "noise.wav"), str(CLIP)]
    assert f"warning: {tmp_path / 'noise.wav'}: its loudness never drops" in err
    assert str(CLIP) not in err


def test_bad_input_errors(tiny_model, tmp_path):
    with pytest.raises(SystemExit, match="does not exist"):
        decode.main(["a.wav", "--ckpt", str(tmp_path / "missing.pt"), "--device", "cpu"])
    path = tmp_path / "m.pt"
    W.save_model(path, tiny_model)
    with pytest.raises(SystemExit, match="is a directory"):
        decode.main([str(tmp_path), "--ckpt", str(path), "--device", "cpu"])


@pytest.mark.parametrize("flags", [["-K", "0"], ["-K", "257"], ["-S", "0"], ["-S", "65"], ["--bench"],
                                   ["--adaptive"], ["--remask", "confidence"], ["--canvas", "full"]])
def test_out_of_range_or_removed_flags_are_refused(flags, capsys):
    """-K in [1, 256], -S in [1, 64]; the benchmark and the removed decoding variants are no flags of decode.py."""
    with pytest.raises(SystemExit) as e:
        decode.get_args(["a.wav", "--device", "cpu"] + flags)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert ("an integer in" in err) if flags[0] in ("-K", "-S") else ("unrecognized arguments" in err)
    assert decode.get_args(["a.wav", "--device", "cpu", "-K", "256", "-S", "64"]).candidates == 256


def test_nothing_to_do_points_at_the_benchmark(capsys):
    with pytest.raises(SystemExit):
        decode.get_args(["--device", "cpu"])
    assert "python -m tools.bench" in capsys.readouterr().err


def test_eval_writes_the_table_and_never_overwrites_one(tiny_model, tmp_path, real_manifest, capsys):
    """--eval writes a per-utterance CSV and a JSON summary; a second --eval to the same --out keeps the first
    result and writes librivox-2.csv, saying so on stderr."""
    path = tmp_path / "m.pt"
    W.save_model(path, tiny_model)
    out = tmp_path / "res"
    args = ["--ckpt", str(path), "--eval", str(real_manifest), "-K", "2", "-S", "2", "--device", "cpu",
            "--out", str(out)]
    decode.main(args + ["--limit", "2"])
    first = capsys.readouterr()
    assert "corpus WER" in first.out and "exists" not in first.err
    table = (out / "librivox.csv").read_text()
    rows = table.splitlines()
    assert len(rows) == 3 and rows[0].startswith("id,reference,whisfusion_hyp")
    assert "whisfusion" in (out / "librivox.json").read_text()
    decode.main(args + ["--limit", "1"])  # another run, another table: one utterance
    second = capsys.readouterr()
    assert f"{out / 'librivox.csv'} exists: writing {out / 'librivox-2.csv'}" in second.err
    assert (out / "librivox.csv").read_text() == table  # the first result, untouched
    assert len((out / "librivox-2.csv").read_text().splitlines()) == 2 and (out / "librivox-2.json").is_file()


def test_fresh_path_skips_every_taken_name(tmp_path, capsys):
    base = tmp_path / "test.csv"
    assert decode.fresh_path(base) == base and capsys.readouterr().err == ""
    base.write_text("x")
    (tmp_path / "test-2.json").write_text("{}")  # a summary alone also takes its name
    assert decode.fresh_path(base) == tmp_path / "test-3.csv"
    assert "test-3.csv" in capsys.readouterr().err


def test_whisper_baseline_with_the_converted_weights(tmp_path, real_manifest):
    res = decode.evaluate(None, str(real_manifest), decode.DecodeOptions(), "cpu", tmp_path / "b.csv",
                          baselines=["tiny.en"])
    corpus, mean_utt, repeated, _ = res["whisper-tiny.en"]
    assert corpus < 10 and repeated == 0  # about 4 % on these five LibriVox clips


def test_wer_uses_whisper_normaliser():
    corpus, mean_utt, per = decode.wer(["mister smith has ten dogs", "hello"], ["Mr. Smith has 10 dogs.", "yellow"])
    assert per == [0.0, 100.0] and corpus == pytest.approx(100 / 6) and mean_utt == 50.0


def test_digits_and_their_spelling_score_alike():
    """The references spell numbers out (data.normalize_text); Whisper writes digits. normalize reads both
    through the corpus's spelling first, so "4.30" is "four thirty" and "%" is "percent"."""
    assert decode.normalize("at 4.30") == decode.normalize("at four thirty")
    assert decode.normalize("50% off") == decode.normalize("fifty percent off")
    assert decode.wer(["the train leaves at four thirty"], ["The train leaves at 4.30."])[0] == 0.0


def test_a_checkpoint_decodes_in_fp32_on_a_cpu(tiny_model, tmp_path):
    W.save_model(tmp_path / "m.pt", tiny_model)
    assert {p.dtype for p in decode.load_for_decoding(tmp_path / "m.pt", "cpu").parameters()} == {torch.float32}
    with pytest.raises(ValueError, match="fp32 only"):
        decode.load_for_decoding(tmp_path / "m.pt", "cpu", torch.bfloat16)
    model, ckpt = decode.load_for_decoding(tmp_path / "m.pt", "cpu", with_ckpt=True)
    assert "config" in ckpt and not model.training


def test_a_stage0_or_diverged_checkpoint_is_refused(tiny_model, tmp_path, capsys):
    """Stage 0 has only read text: its transcripts would be invented. NaN weights (in the model or in its EMA
    copy, which is what decoding uses) mean the training diverged. Both are refused, naming the file; decode.py
    reports either as one error line."""
    W.save_model(tmp_path / "stage0.pt", tiny_model, stage=0)
    with pytest.raises(W.CheckpointError, match="stage-0"):
        decode.load_for_decoding(tmp_path / "stage0.pt", "cpu")
    with pytest.raises(SystemExit, match=r"error: .*stage0\.pt is a stage-0 checkpoint"):
        decode.main([str(CLIP), "--ckpt", str(tmp_path / "stage0.pt"), "--device", "cpu", "--out", str(tmp_path)])
    assert capsys.readouterr().out == ""  # nothing transcribed
    W.save_model(tmp_path / "ema.pt", tiny_model, stage=2,
                 ema={"lm_head.weight": torch.full_like(tiny_model.lm_head.weight, float("nan"))})
    with pytest.raises(W.CheckpointError, match=r"ema\.pt: .*NaN or inf \(lm_head\.weight"):
        decode.load_for_decoding(tmp_path / "ema.pt", "cpu")
    with torch.no_grad():
        tiny_model.blocks[0].mlp.w1.weight[0, 0] = float("nan")
    W.save_model(tmp_path / "nan.pt", tiny_model, stage=2)
    with pytest.raises(W.CheckpointError, match=r"nan\.pt: .*NaN or inf \(blocks\.0\.mlp\.w1"):
        decode.load_for_decoding(tmp_path / "nan.pt", "cpu")


def test_an_unfinished_checkpoint_decodes_with_a_warning(tiny_model, tmp_path, capsys):
    W.save_model(tmp_path / "cut.pt", tiny_model, stage=2, finished=False, step=30, args={"steps": 100})
    W.save_model(tmp_path / "done.pt", tiny_model, stage=2, finished=True, step=100, args={"steps": 100})
    assert decode.load_for_decoding(tmp_path / "cut.pt", "cpu") is not None
    err = capsys.readouterr().err
    assert err.startswith("warning: ") and "cut.pt is unfinished (stage 2 stopped at step 30 of 100)" in err
    assert "python train.py --stage 2" in err and "--resume" in err  # the command that finishes it
    decode.load_for_decoding(tmp_path / "done.pt", "cpu")
    assert capsys.readouterr().err == ""


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


def test_cuda_graphs_only_on_a_gpu_and_only_when_asked():
    assert not decode.use_cuda_graph("cpu", decode.DecodeOptions())
    assert decode.use_cuda_graph("cuda", decode.DecodeOptions())
    assert decode.use_cuda_graph("cuda:1", decode.DecodeOptions())
    assert not decode.use_cuda_graph("cuda", decode.DecodeOptions(cuda_graph=False))


def test_repeated_word_rate():
    assert decode.repeated_word_rate(["the the cat", "a b c d"]) == pytest.approx(100 * 1 / 7)
    assert decode.repeated_word_rate(["", "one"]) == 0.0


def test_a_word_written_twice_in_a_row_is_written_once():
    assert decode.drop_repeats("The the cat sat sat on on on the mat") == "The cat sat on the mat"
    assert decode.drop_repeats("") == ""
    for numbers in ("dial one one nine three", "dial eight eight oh oh", "twenty twenty", "nine hundred hundred"):
        assert decode.drop_repeats(numbers) == numbers  # numbers read digit by digit repeat their words
    tokens = torch.tensor([[data.make_canvas(t, 16) for t in ["a a b", "a b b"]]])
    scores = torch.tensor([[0.9, 0.1]])
    opts = decode.DecodeOptions(select="confidence")
    assert decode.select(tokens, scores, opts) == ["a b"]
    assert decode.select(tokens, scores, dataclasses.replace(opts, drop_repeats=False)) == ["a a b"]
    assert decode.repeated_word_rate(decode.select(tokens, scores, opts)) == 0.0


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
    the same model told that its canvas is L long gives the same tokens (generate_fast too)."""
    lively(tiny_model)
    opts = decode.DecodeOptions(candidates=4, steps=4, seed=5)
    noise = decode.draw_noise(opts, tiny_model.cfg.decoder.canvas_len, "cpu")
    short = replace_canvas_len(tiny_model, 32)
    tokens, scores = decode.generate(tiny_model, ctx, opts, length=32, noise=noise)
    ref_tokens, ref_scores = decode.generate(short, ctx, opts, noise=noise[:, :, :32])
    assert tokens.shape == (1, 4, 32) and torch.equal(tokens, ref_tokens)
    assert torch.allclose(scores, ref_scores, atol=1e-5)
    fast_tokens, _ = decode.generate_fast(tiny_model, ctx, opts, length=32, noise=noise)
    assert torch.equal(fast_tokens, ref_tokens)


def replace_canvas_len(model, L):
    """The same model (shared weights) whose config says canvas_len = L (the default length generate reads)."""
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
    lively(tiny_model)  # each clip gets its own, audio-dependent transcript
    mel = torch.stack([data.log_mel(a) for a in clips])
    n = decode.frame_counts(clips)
    assert len(decode.canvas_groups(tiny_model, n, opts)) >= 2
    together = decode.decode_batch(tiny_model, mel, n, opts)
    alone = [decode.decode_batch(tiny_model, mel[i:i + 1], n[i:i + 1], opts)[0] for i in range(3)]
    assert together == alone and len(set(together)) == 3
    assert decode.transcribe(tiny_model, clips, opts) == together  # sorted by length inside, same order out


def test_a_restricted_output_layer_gives_the_full_heads_logits_over_its_ids(tiny_model, ctx):
    """tools.bench.restrict_output keeps the head rows of some ids: their logits are the full head's, so the
    greedy token is the full head's wherever that one is kept, and decoding writes only kept ids."""
    tok = data.get_tokenizer()
    words = set(tok.encode(" he was not an ill disposed young man"))
    ids = sorted(words | {tok.sot, tok.eot})
    canvas = torch.full((1, tiny_model.cfg.decoder.canvas_len), tiny_model.cfg.decoder.mask_id)
    small = restrict_output(copy.deepcopy(tiny_model), words)  # sot and eot are always kept
    assert small.head_ids.tolist() == ids and small.wte is not tiny_model.wte
    with torch.no_grad():
        full, cut = tiny_model(canvas, ctx), small(canvas, ctx)
    torch.testing.assert_close(cut, full[..., ids], rtol=1e-5, atol=1e-5)  # a narrower matmul: last bits
    best = full.argmax(-1)
    kept = torch.isin(best, torch.tensor(ids))
    assert torch.equal(small.head_ids[cut.argmax(-1)][kept], best[kept])
    for gen in (decode.generate, decode.generate_fast):
        tokens, _ = gen(small, ctx, decode.DecodeOptions(candidates=2, steps=2))
        assert torch.isin(tokens, torch.tensor(ids)).all()


def test_bench_times_the_restricted_output_layer_on_a_copy(tiny_model, real_manifest, tmp_path):
    """`python -m tools.bench` adds a row with the output layer cut to the training text's ids: it decodes with
    a restricted copy, so the full model it is compared with keeps its 51,864-way head."""
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
