"""train.py: a tiny stage 0 -> 1 -> 2 curriculum on real speech, frozen sets, resume, DDP, bad input."""
import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train
import whisfusion as W
from conftest import killed_at_step

ROOT = Path(__file__).resolve().parents[1]


def run_stage(stage, out, manifest, *extra):
    train.Logbook.LOG_EVERY = 5  # a CSV row every 5 steps: enough rows to see a 60-step loss fall
    return train.main(["--stage", str(stage), "--preset", "tiny", "--train-split", str(manifest),
                       "--dev-split", str(manifest), "--out-dir", str(out), "--batch-size", "5",
                       "--eval-every", "1000", "--device", "cpu", *extra])


def losses(out, stage):
    with open(Path(out) / f"stage{stage}_log.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def curriculum(tmp_path_factory, real_manifest):
    out = tmp_path_factory.mktemp("ck")
    run_stage(0, out, real_manifest, "--steps", "60", "--lr", "1e-3")
    run_stage(1, out, real_manifest, "--steps", "60", "--lr", "3e-3")
    run_stage(2, out, real_manifest, "--steps", "60", "--lr", "3e-3")
    return out


def test_stage0_loss_falls(curriculum):
    # 60 steps of 5 utterances are enough for the text model (11 -> 6), not for stages 1-2 of this 2 x 64 model
    # with a 51,864-way head: their masked-token loss stays within noise of the stage-0 model's. That stages 1
    # and 2 learn is asserted where they have the steps to: notebook 05 (each stage's loss and WER fall on the
    # CPU task, tests/test_notebooks.py), and the overfit test of the whole model in test_model.py.
    ls = losses(curriculum, 0)
    assert sum(ls[-3:]) / 3 < 0.8 * sum(ls[:3]) / 3


def load_state(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_stage1_changes_only_the_adapter(curriculum):
    s0, s1 = load_state(curriculum / "stage0.pt"), load_state(curriculum / "stage1.pt")
    changed = {k for k in s0 if not torch.equal(s0[k], s1[k])}
    assert changed and all(W.is_adapter(k) for k in changed)  # every frozen tensor is bitwise unchanged


def test_stage2_trains_exactly_adapter_and_lora(curriculum):
    s1, s2 = load_state(curriculum / "stage1.pt"), load_state(curriculum / "stage2.pt")
    changed = {k for k in s1 if not torch.equal(s1[k], s2[k])}
    assert any("lora_" in k for k in changed) and any(W.is_adapter(k) for k in changed)
    assert all(W.is_adapter(k) or "lora_" in k for k in changed)
    ckpt = torch.load(curriculum / "stage2.pt", map_location="cpu", weights_only=True)
    assert ckpt["ema"] and set(ckpt["ema"]) == {k for k in s2 if W.is_adapter(k) or "lora_" in k}
    assert ckpt["config"]["decoder"]["n_layer"] == 2 and ckpt["stage"] == 2 and "rng" in ckpt


def test_the_recipe_fills_what_the_command_line_leaves_open(curriculum, monkeypatch):
    """Stage 2 of a recipe sets its regularisers in the model and its config (saved with checkpoints); a flag
    given on the command line wins over the recipe; a later stage keeps its checkpoint's preset."""
    monkeypatch.setitem(train.RECIPES["tiny"], 2, dict(size="small", steps=7, batch_size=3, dropout=0.05,
                                                       time_masks=2))
    args = train.get_args(["--stage", "2", "--init", str(curriculum / "stage1.pt"), "--batch-size", "4",
                           "--device", "cpu", "--out-dir", str(curriculum / "recipe")])
    start = train.starting_checkpoint(args)
    train.apply_recipe(args, start)
    assert (args.preset, args.steps, args.batch_size, args.lr) == ("tiny", 7, 4, train.STAGES[2]["lr"])
    model = train.init_model(args, "cpu", [], start)
    assert model.cfg.decoder.dropout == 0.05 and model.cfg.adapter.time_masks == 2
    assert all(blk.drop.p == 0.05 for blk in model.blocks)
    assert train.RECIPES["default"][2]["dropout"] == 0.1 and train.RECIPES["default"][1]["speed_perturb"] == (0.9, 1.1)
    with pytest.raises(SystemExit, match="trained with --preset tiny"):
        train.apply_recipe(train.get_args(["--stage", "2", "--init", str(curriculum / "stage1.pt"), "--preset",
                                           "cpu", "--device", "cpu"]), start)


def test_resume_after_interruption_matches_uninterrupted(tmp_path, curriculum, real_manifest):
    args = ["--steps", "12", "--ckpt-every", "6", "--init", str(curriculum / "stage0.pt")]
    run_stage(1, tmp_path / "straight", real_manifest, *args)
    with killed_at_step(8):
        run_stage(1, tmp_path / "killed", real_manifest, *args)
    assert torch.load(tmp_path / "killed/stage1.pt", weights_only=True)["step"] == 6  # the last checkpoint
    run_stage(1, tmp_path / "killed", real_manifest, *args, "--resume")
    a, b = load_state(tmp_path / "straight/stage1.pt"), load_state(tmp_path / "killed/stage1.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_missing_previous_stage_says_which_command(tmp_path, real_manifest):
    with pytest.raises(SystemExit, match=r"stage0.pt is missing.*python train.py --stage 0"):
        run_stage(1, tmp_path, real_manifest, "--steps", "1")


def test_missing_data_points_to_data_py(tmp_path, monkeypatch, curriculum):
    monkeypatch.setattr(train.data, "DATA_DIR", tmp_path)
    with pytest.raises(SystemExit, match=r"python data.py --size small"):  # stage 1 needs the speech corpus
        train.main(["--stage", "1", "--init", str(curriculum / "stage0.pt"), "--out-dir", str(tmp_path),
                    "--device", "cpu", "--steps", "1"])
    with pytest.raises(SystemExit, match=r"is missing: `python data.py"):  # stage 0 needs the weights and the text
        train.main(["--stage", "0", "--preset", "tiny", "--out-dir", str(tmp_path), "--device", "cpu", "--steps", "1"])


def ddp_cmd(out, curriculum, manifest, port, *extra):
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
            str(ROOT / "train.py"), "--stage", "1", "--init", str(curriculum / "stage0.pt"), "--train-split",
            str(manifest), "--dev-split", str(manifest), "--out-dir", str(out), "--batch-size", "2",
            "--eval-every", "1000", "--device", "cpu", *extra]


def test_two_process_gloo_ddp(tmp_path, curriculum, real_manifest):
    cmd = ddp_cmd(tmp_path, curriculum, real_manifest, 29533, "--steps", "4")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "| 2 processes (torchrun)" in res.stdout  # the run says it is one of several processes
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["stage1.pt"]
    assert torch.load(tmp_path / "stage1.pt", weights_only=True)["step"] == 4


def test_gather_frames_is_the_padded_batch_of_the_cached_rows():
    torch.manual_seed(0)
    n = torch.tensor([3, 7, 1, 5])
    flat = torch.randn(int(n.sum()), 4)
    start = torch.cumsum(n, 0) - n
    idx = torch.tensor([2, 0, 3])
    expected = torch.nn.utils.rnn.pad_sequence([flat[s:s + k] for s, k in zip(start[idx], n[idx])], batch_first=True)
    torch.testing.assert_close(train.gather_frames(flat, start[idx], n[idx]), expected)
    rounded = train.gather_frames(flat, start[idx], n[idx], multiple=4)  # the longest, 5 frames -> 8, zero-padded
    assert rounded.shape == (3, 8, 4) and (rounded[:, 5:] == 0).all()
    torch.testing.assert_close(rounded[:, :5], expected)


@pytest.mark.parametrize("world", [1, 3])
def test_length_bucketed_shards_cover_each_epoch_once_and_pad_less(world):
    lengths = torch.randint(50, 1500, (1000,))
    batch, steps_per_epoch = 8, 1000 // (8 * world)
    plain = [train.Shards(1000, batch, 0, r, world) for r in range(world)]
    bucketed = [train.Shards(1000, batch, 0, r, world, lengths) for r in range(world)]
    for shards in (plain, bucketed):
        for epoch in range(2):
            seen = torch.cat([s.batch_at(epoch * steps_per_epoch + i) for s in shards for i in range(steps_per_epoch)])
            assert len(seen) == len(set(seen.tolist())) == steps_per_epoch * batch * world  # each utterance once
        assert not torch.equal(shards[0].batch_at(0), shards[0].batch_at(steps_per_epoch))  # epochs differ

    def padded(shards):  # frames computed per epoch: every batch is cut to its longest clip
        return sum(len(b) * int(lengths[b].max()) for b in (shards[0].batch_at(i) for i in range(steps_per_epoch)))
    assert padded(bucketed) < 0.7 * padded(plain)
    assert torch.equal(bucketed[0].batch_at(5), train.Shards(1000, batch, 0, 0, world, lengths).batch_at(5))


def test_the_encoder_comes_from_the_preset_unless_whisper_is_given(tmp_path):
    """`default` (the GPU recipe) reads Whisper-base's encoder, the CPU presets tiny.en's; --whisper overrides.
    Each preset's encoder config has the shape of the Whisper encoder it names (openai-whisper's dims), so a model
    built from the preset alone, as the benchmark's untrained one is, has the trained model's shapes."""
    assert W.PRESETS["default"].whisper == "base" and W.PRESETS["cpu"].whisper == W.PRESETS["tiny"].whisper == "tiny.en"
    whisper_dims = {"tiny.en": (384, 6, 4), "base": (512, 8, 6), "small": (768, 12, 12)}  # width, heads, layers
    for name, cfg in W.PRESETS.items():
        e = cfg.encoder
        assert (e.n_audio_state, e.n_audio_head, e.n_audio_layer) == whisper_dims[cfg.whisper], name
    args = train.get_args(["--stage", "0", "--preset", "tiny", "--device", "cpu", "--out-dir", str(tmp_path)])
    train.apply_recipe(args, None)
    assert args.whisper is None and train.init_model(args, "cpu", [], None).cfg.whisper == "tiny.en"


def test_speed_perturbation_adds_faster_and_slower_copies_with_the_same_text(tmp_path, curriculum, real_manifest,
                                                                           monkeypatch, capsys):
    """Speed perturbation 0.9, 1.1 (stages 1-2 of the GPU recipe): every training utterance also at 0.9x and 1.1x speed (Kaldi's recipe): the same
    canvas, 1/0.9 and 1/1.1 of the encoder frames, the pitch moved with the speed; one feature cache per speed,
    and the files' own audio keeps the cache it had."""
    import numpy as np
    import data
    sr = data.SAMPLE_RATE
    tone = np.sin(2 * np.pi * 400 * np.arange(sr) / sr).astype(np.float32)
    fast = data.change_speed(tone, 1.25)
    assert abs(len(fast) - sr / 1.25) <= 2 and data.change_speed(tone, 1) is tone
    assert abs(np.abs(np.fft.rfft(fast)).argmax() * sr / len(fast) - 500) < 5  # 400 Hz played 1.25x faster

    monkeypatch.setattr(data, "DATA_DIR", tmp_path)  # the feature caches of this test only
    model = W.load_model(curriculum / "stage0.pt", "cpu")[0]
    utts = data.load_split(str(real_manifest))
    batches = train.AudioBatches(model, data.speed_perturbed(utts, (0.9, 1.1)), "train", "cpu")
    n = len(utts)
    assert len(batches) == 3 * n and [u.speed for u in batches.ds.utts] == [1.0] * n + [0.9] * n + [1.1] * n
    assert torch.equal(batches.canvas[:n], batches.canvas[n:2 * n]) and torch.equal(batches.canvas[:n], batches.canvas[2 * n:])
    frames = batches.n_frames.float()
    torch.testing.assert_close(frames[n:2 * n], frames[:n] / 0.9, atol=2, rtol=0)
    torch.testing.assert_close(frames[2 * n:], frames[:n] / 1.1, atol=2, rtol=0)
    assert len(list((tmp_path / "features").glob("*.pt"))) == 3
    assert train.feature_key(model, utts) == train.feature_key(model, data.speed_perturbed(utts, (1.0,)))
    assert train.feature_key(model, utts) != train.feature_key(model, data.speed_perturbed(utts, (0.9,))[n:])
