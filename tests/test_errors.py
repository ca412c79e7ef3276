"""Bad input and faults: each gives one clear line naming the file or flag and the fix, or a warning
where the result is legitimately empty; finished work is never overwritten or lost."""
import errno
import os
import shutil
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import data
import decode
import train
import whisfusion as W
from conftest import CLIP, LIBRIVOX, killed_at_step
from tools import tinyspeech


@pytest.fixture(scope="module")
def init_ckpt(tmp_path_factory, tiny_cfg, tiny_en_state):
    """A stage-0 checkpoint of the tiny model (untrained decoder, real tiny.en encoder): stage 1 starts here."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("init") / "stage0.pt"
    W.save_model(path, W.build_model(tiny_cfg, tiny_en_state[1]), stage=0)
    return path


@pytest.fixture()
def features_dir(tmp_path, monkeypatch, tiny_en_path):
    """Feature caches in a folder of this test's own (stage 1 with --init reads nothing else from DATA_DIR)."""
    monkeypatch.setattr(data, "DATA_DIR", tmp_path / "data")
    return tmp_path / "data" / "features"


def stage1(out, manifest, init, *extra):
    return train.main(["--stage", "1", "--init", str(init), "--train-split", str(manifest), "--dev-split",
                       str(manifest), "--out-dir", str(out), "--batch-size", "5", "--eval-every", "1000",
                       "--device", "cpu", *extra])


def one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and "Traceback" not in msg, msg
    return msg


def ckpt(path):
    return torch.load(path, map_location="cpu", weights_only=True)

# ----------------------------------------------------------------------------------------------------------
# 1. resume


def test_resume_with_other_flags_warns(tmp_path, real_manifest, init_ckpt, features_dir, capsys):
    """A resumed run with another batch size or step count goes on, but says it will not end where the
    uninterrupted run would; the same flags say nothing."""
    with killed_at_step(3):
        stage1(tmp_path, real_manifest, init_ckpt, "--steps", "6", "--ckpt-every", "2")
    stage1(tmp_path, real_manifest, init_ckpt, "--steps", "6", "--ckpt-every", "2", "--resume")
    assert "--resume with other flags" not in capsys.readouterr().err
    with killed_at_step(3):
        stage1(tmp_path, real_manifest, init_ckpt, "--steps", "6", "--ckpt-every", "2", "--overwrite")
    stage1(tmp_path, real_manifest, init_ckpt, "--steps", "8", "--ckpt-every", "2", "--resume", "--batch-size", "4")
    err = capsys.readouterr().err
    assert "warning: --resume with other flags than the interrupted run (--batch-size 5 -> 4, --steps 6 -> 8)" in err
    assert ckpt(tmp_path / "stage1.pt")["step"] == 8
    # the resume command a Ctrl-C prints names no --steps: the run ends where the interrupted one would have
    with killed_at_step(3):
        stage1(tmp_path, real_manifest, init_ckpt, "--steps", "6", "--ckpt-every", "2", "--overwrite")
    stage1(tmp_path, real_manifest, init_ckpt, "--resume")
    assert "--resume with other flags" not in capsys.readouterr().err
    assert ckpt(tmp_path / "stage1.pt")["step"] == 6

# ----------------------------------------------------------------------------------------------------------
# 2. no overwrite without --resume or --overwrite; per-process temporary files


def test_finished_stage_is_not_overwritten_without_a_flag(tmp_path, real_manifest, init_ckpt, features_dir):
    stage1(tmp_path, real_manifest, init_ckpt, "--steps", "2")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert set(before) == {"stage1.pt", "stage1_log.csv"}
    with pytest.raises(SystemExit) as e:
        stage1(tmp_path, real_manifest, init_ckpt, "--steps", "3")
    assert "stage1.pt exists: pass --resume to continue it or --overwrite to start again" in one_line(e)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before  # checkpoint and log kept
    stage1(tmp_path, real_manifest, init_ckpt, "--steps", "3", "--overwrite")
    assert ckpt(tmp_path / "stage1.pt")["step"] == 3
    with pytest.raises(SystemExit):  # argparse: contradicting flags
        stage1(tmp_path, real_manifest, init_ckpt, "--resume", "--overwrite")


def test_atomic_save_uses_a_per_process_temporary_file_and_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "x.pt"
    W.atomic_save({"a": 1}, path)
    seen, real_save = [], torch.save

    def failing_save(obj, f):
        seen.append(str(f))
        real_save(obj, f)
        raise OSError(errno.ENOSPC, "No space left on device", str(f))
    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError):
        data.atomic_save({"a": 2}, path)
    assert seen == [f"{path}.{os.getpid()}.tmp"]  # two runs on one out-dir never share a temporary file
    assert torch.load(path, weights_only=True) == {"a": 1} and sorted(p.name for p in tmp_path.iterdir()) == ["x.pt"]

# ----------------------------------------------------------------------------------------------------------
# 3. the feature cache: invalidated by changed audio or another encoder; training identical with and without it


def test_feature_cache_key_follows_the_audio_and_the_encoder(tmp_path, tiny_model):
    wav = tmp_path / "a.wav"
    audio = data.load_audio(CLIP)
    sf.write(wav, audio, 16000)
    utts = [data.Utterance("a", str(wav), "x")]
    key = train.feature_key(tiny_model, utts)
    assert train.feature_key(tiny_model, utts) == key
    sf.write(wav, audio[::-1].copy(), 16000)  # other audio, same path, same size
    os.utime(wav, ns=(os.stat(wav).st_atime_ns, os.stat(wav).st_mtime_ns + 1_000_000))
    assert train.feature_key(tiny_model, utts) != key
    key = train.feature_key(tiny_model, utts)
    with torch.no_grad():
        tiny_model.encoder.conv1.weight[0, 0, 0] += 1  # another encoder
    assert train.feature_key(tiny_model, utts) != key


def test_training_is_identical_with_and_without_a_feature_cache(tmp_path, real_manifest, init_ckpt, features_dir):
    stage1(tmp_path / "a", real_manifest, init_ckpt, "--steps", "3")  # builds the cache
    assert len(list(features_dir.glob("*.pt"))) == 1
    stage1(tmp_path / "b", real_manifest, init_ckpt, "--steps", "3")  # finds it
    a, b = ckpt(tmp_path / "a/stage1.pt")["model"], ckpt(tmp_path / "b/stage1.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_damaged_feature_cache_is_rebuilt(tmp_path, real_manifest, init_ckpt, features_dir, capsys):
    stage1(tmp_path / "a", real_manifest, init_ckpt, "--steps", "1")
    cache = next(features_dir.glob("*.pt"))
    cache.write_bytes(cache.read_bytes()[:1000])
    stage1(tmp_path / "b", real_manifest, init_ckpt, "--steps", "1")
    assert "damaged feature cache; building it again" in capsys.readouterr().err
    assert ckpt(tmp_path / "b/stage1.pt")["step"] == 1

# ----------------------------------------------------------------------------------------------------------
# 4. arguments: each bad value is one argparse line naming the flag


@pytest.mark.parametrize("argv, flag", [
    (["--batch-size", "0"], "--batch-size"), (["--batch-size", "-4"], "--batch-size"),
    (["--grad-accum", "0"], "--grad-accum"), (["--steps", "0"], "--steps"), (["--ckpt-every", "0"], "--ckpt-every"),
    (["--lr", "0"], "--lr"), (["--lr", "x"], "--lr"), (["--lr", "nan"], "--lr"), (["--eval-every", "0"], "--eval-every"),
    (["--lora-rank", "-1"], "--lora-rank"), (["--device", "tpu"], "--device"), (["--init", "x.pt"], "--init"),
    (["--batch-size", "100000000"], "--batch-size"), (["--seed", "-1"], "--seed"),
    (["--whisper", "base"], "--whisper"),  # stage 1 keeps its checkpoint's encoder
    (["--lora-rank", "4"], "--lora-rank"),  # LoRA is stage 2's
])
def test_bad_train_arguments_name_the_flag(argv, flag, capsys):
    stage = "1" if flag != "--init" else "0"
    with pytest.raises(SystemExit) as e:
        train.get_args(["--stage", stage, *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("train.py: error:") or "error:" in err
    assert flag in err, err


def test_out_dir_that_is_a_file(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    with pytest.raises(SystemExit):
        train.get_args(["--stage", "1", "--out-dir", str(tmp_path / "f")])
    assert "--out-dir" in capsys.readouterr().err


def test_lr_is_taken_as_given(tmp_path, real_manifest, init_ckpt, features_dir):
    stage1(tmp_path, real_manifest, init_ckpt, "--steps", "1", "--lr", "1e-6")
    assert ckpt(tmp_path / "stage1.pt")["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-6)


@pytest.mark.parametrize("argv, flag", [
    (["-K", "0"], "-K"), (["-S", "0"], "-S"), (["--candidates", "-2"], "--candidates"), (["--limit", "0"], "--limit"),
    (["--device", "gpu"], "--device"), ([], "nothing to do"), (["--ckpt", "none", "a.wav"], "--ckpt none"),
    (["-K", "100000"], "-K"), (["-S", "100000"], "-S"),
])
def test_bad_decode_arguments_name_the_flag(argv, flag, capsys):
    extra = ["a.wav"] if argv and "a.wav" not in argv and flag != "nothing to do" else []
    with pytest.raises(SystemExit) as e:
        decode.main([*extra, *argv])
    assert e.value.code == 2
    assert flag in capsys.readouterr().err

# ----------------------------------------------------------------------------------------------------------
# 5. bad checkpoints: one line naming the file and what to pass instead, from load_model and both CLIs


@pytest.fixture(scope="module")
def bad_ckpts(tmp_path_factory, init_ckpt, tiny_en_path):
    d = tmp_path_factory.mktemp("bad")
    good = init_ckpt.read_bytes()
    (d / "truncated.pt").write_bytes(good[:len(good) // 2])
    (d / "random.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    (d / "empty.pt").write_bytes(b"")
    torch.save({"config": {"decoder": {"n_layer": 2, "no_such_field": 1}}, "model": {}}, d / "other_config.pt")
    c = ckpt(init_ckpt)
    c["config"]["decoder"]["n_embd"] = 128  # a config its weights do not fit
    torch.save(c, d / "mismatch.pt")
    torch.save([1, 2, 3], d / "list.pt")
    torch.save({"a": types.SimpleNamespace(x=1)}, d / "unsafe.pt")
    return {"truncated": (d / "truncated.pt", "truncated or damaged"),
            "random": (d / "random.pt", "not a PyTorch checkpoint"),
            "empty": (d / "empty.pt", "is empty"),
            "whisper": (tiny_en_path, "openai-whisper checkpoint, not a Whisfusion one: pass it as --whisper"),
            "other_config": (d / "other_config.pt", "another version"),
            "mismatch": (d / "mismatch.pt", "weights do not fit its config"),
            "list": (d / "list.pt", "not a checkpoint dict"),
            "unsafe": (d / "unsafe.pt", "was refused"),
            "directory": (d, "is a directory")}


@pytest.mark.parametrize("kind", ["truncated", "random", "empty", "whisper", "other_config", "mismatch", "list",
                                  "unsafe", "directory"])
def test_bad_checkpoint_is_one_line_from_every_entry(kind, bad_ckpts, tmp_path, real_manifest, features_dir):
    path, says = bad_ckpts[kind]
    with pytest.raises(W.CheckpointError) as e:
        W.load_model(path)
    assert str(path) in one_line(e) and says in str(e.value)
    with pytest.raises(SystemExit) as e:
        decode.main(["a.wav", "--ckpt", str(path), "--device", "cpu"])
    assert one_line(e).startswith("error: ") and str(path) in str(e.value) and says in str(e.value)
    with pytest.raises(SystemExit) as e:
        stage1(tmp_path, real_manifest, path, "--steps", "1")
    assert one_line(e).startswith("error: ") and str(path) in str(e.value) and says in str(e.value)


def test_damaged_checkpoint_on_resume_and_a_whisfusion_checkpoint_as_whisper(tmp_path, bad_ckpts, init_ckpt,
                                                                               real_manifest):
    shutil.copy(bad_ckpts["truncated"][0], tmp_path / "stage1.pt")
    with pytest.raises(SystemExit) as e:
        stage1(tmp_path, real_manifest, init_ckpt, "--resume")
    assert "stage1.pt is truncated or damaged" in one_line(e)
    with pytest.raises(W.CheckpointError, match="is a Whisfusion checkpoint, not a Whisper one: pass it as --init"):
        W.whisper_encoder_dims(init_ckpt)

# ----------------------------------------------------------------------------------------------------------
# 6. a multi-file decode transcribes every readable file, names each bad one, exits non-zero at the end


def test_multi_file_decode_goes_past_bad_files(tmp_path, tiny_model, capsys):
    W.save_model(tmp_path / "m.pt", tiny_model)
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF....WAVEfmt garbage" * 10)
    clips = sorted(LIBRIVOX.glob("*.wav"))[:2]
    files = [str(clips[0]), str(tmp_path / "missing.wav"), str(tmp_path / "corrupt.wav"), str(clips[1])]
    with pytest.raises(SystemExit) as e:
        decode.main([*files, "--ckpt", str(tmp_path / "m.pt"), "-K", "2", "-S", "2", "--device", "cpu"])
    assert e.value.code != 0 and "2 of 4 files could not be read" in one_line(e)
    out, err = capsys.readouterr()
    assert [line.split("\t")[0] for line in out.splitlines()] == [str(clips[0]), str(clips[1])]
    assert "missing.wav: no such audio file" in err and "corrupt.wav: cannot read" in err

# ----------------------------------------------------------------------------------------------------------
# 7. silent problems now speak: empty/silent audio, truncated WAV, readers, the cached Whisper weights


def test_empty_and_silent_audio_warn_on_stderr(tmp_path, tiny_model, capsys):
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    sf.write(tmp_path / "silent.wav", np.zeros(16000, np.float32), 16000)
    W.save_model(tmp_path / "m.pt", tiny_model)
    decode.main([str(tmp_path / "empty.wav"), str(tmp_path / "silent.wav"), "--ckpt", str(tmp_path / "m.pt"),
                 "-K", "2", "--device", "cpu"])
    err = capsys.readouterr().err
    assert "empty.wav: no speech (empty): empty transcript" in err
    assert "silent.wav: no speech (silent or under 0.1 s): empty transcript" in err


def test_truncated_wav_warns(tmp_path, capsys):
    sf.write(tmp_path / "a.wav", data.load_audio(CLIP), 16000, subtype="PCM_16")
    raw = (tmp_path / "a.wav").read_bytes()
    (tmp_path / "a.wav").write_bytes(raw[:len(raw) // 2])
    audio = data.load_audio(tmp_path / "a.wav")
    assert 0 < len(audio) < len(data.load_audio(CLIP))
    assert "a.wav: truncated: it holds 50 % of the audio" in capsys.readouterr().err
    data.load_audio(CLIP)
    assert capsys.readouterr().err == ""  # a complete file says nothing


def test_manifest_errors_name_file_line_and_fix(tmp_path, real_manifest):
    clip = str(CLIP)
    m = tmp_path / "h.tsv"
    m.write_text(f"id\taudio\tseconds\tvoice\ttext\nu1\t{clip}\t1.0\tv\thello there\nu2\t{clip}\t1.0\tv\n")
    with pytest.raises(ValueError, match=r"h.tsv:3: 4 columns where the header has 5 \(missing: text\)"):
        data.load_split(str(m))
    m.write_text(f"id\taudio\tseconds\nu1\t{clip}\t1.0\n")
    with pytest.raises(ValueError, match=r"h.tsv:1: the header lacks the column\(s\) text"):
        data.load_split(str(m))
    m.write_text(f"audio\ttext\n{clip}\thello there\n\n\n")  # a minimal header and trailing blank lines
    assert [u.text for u in data.load_split(str(m))] == ["hello there"]
    m.write_bytes(f"{clip}\tcaf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"h.tsv: not UTF-8 text .*`iconv -f latin1 -t utf-8 h.tsv"):
        data.load_split(str(m))
    m.write_text(f"{clip}\thello\n{tmp_path / 'gone.wav'}\tbye\nnope.flac\tx\n")
    with pytest.raises(FileNotFoundError, match=r"2 of 3 audio files are missing, e.g. .*gone.wav, .*nope.flac"):
        data.load_split(str(m))


def test_training_manifest_naming_a_missing_file_fails_before_training(tmp_path, init_ckpt, features_dir):
    m = tmp_path / "m.tsv"
    m.write_text(f"{CLIP}\thello\n{tmp_path / 'gone.wav'}\tbye\n")
    with pytest.raises(SystemExit) as e:
        stage1(tmp_path / "out", m, init_ckpt, "--steps", "1")
    assert one_line(e).startswith("error: ") and "gone.wav" in str(e.value)


def test_unknown_split_is_named_and_only_real_splits_suggest_building(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"unknown split 'tset': use one of train, dev, test, "
                                                r"test-unseen-voice, modern, real, a LibriSpeech folder or a .tsv"):
        data.load_split("tset", "small")
    with pytest.raises(FileNotFoundError, match=r"'numbers' has no modern split"):
        data.load_split("modern", "numbers")
    monkeypatch.setattr(data, "DATA_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"python data.py --size small"):
        data.load_split("test", "small")
    with pytest.raises(SystemExit) as e:
        decode.main(["--ckpt", "none", "--eval", "tset", "--baseline", "tiny.en", "--out", str(tmp_path)])
    assert "unknown split 'tset'" in one_line(e) and "data.py" not in str(e.value)


def test_a_mistyped_baseline_is_refused_before_any_decoding(tmp_path, capsys):
    for name in ("tinyy", "a.wav", str(tmp_path / "gone.pt")):  # a.wav: a file put after --baseline
        with pytest.raises(SystemExit) as e:
            decode.get_args(["--ckpt", "none", "--eval", "test", "--baseline", "tiny.en", name])
        assert e.value.code == 2
        assert f"--baseline {name}: use tiny.en or base, or the path of an openai-whisper .pt" in capsys.readouterr().err
    assert decode.get_args(["--ckpt", "none", "--eval", "test", "--baseline", "tiny.en", "base"]).baseline == [
        "tiny.en", "base"]


def test_librispeech_blank_lines_and_a_chapter_without_transcript(tmp_path, capsys):
    for spk, chap, with_trans in [("19", "198", True), ("26", "495", False)]:
        folder = tmp_path / "ls" / spk / chap
        folder.mkdir(parents=True)
        sf.write(folder / f"{spk}-{chap}-0000.flac", np.zeros(1600, np.int16), 16000)
        if with_trans:
            (folder / f"{spk}-{chap}.trans.txt").write_text(f"{spk}-{chap}-0000 HELLO WORLD\n\n\n")
    utts = data.load_split(str(tmp_path / "ls"))
    assert [(u.id, u.text) for u in utts] == [("19-198-0000", "hello world")]
    assert "26/495 has audio but no *.trans.txt" in capsys.readouterr().err


def test_corrupted_cached_whisper_weights_are_detected(tmp_path, monkeypatch, tiny_en_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    monkeypatch.setattr(data, "DATA_DIR", tmp_path)
    monkeypatch.setattr(data, "_verified", set())
    raw = tiny_en_path.read_bytes()
    (weights / "tiny.en.pt").write_bytes(raw)  # loads, but no checksum says it is the file that was converted
    with pytest.raises(data.DataError, match=r"tiny.en.pt has no checksum.*delete it \(rm .*tiny.en.pt\) and run"):
        data.whisper_checkpoint("tiny.en")
    assert not (weights / "tiny.en.pt.sha256").exists()  # not blessed
    (weights / "tiny.en.pt.sha256").write_text(data.sha256(raw) + "\n")
    assert data.whisper_checkpoint("tiny.en") == weights / "tiny.en.pt"
    flipped = bytearray(raw)
    flipped[len(raw) // 2] ^= 0xFF  # still loads, but not the bytes that were written
    (weights / "tiny.en.pt").write_bytes(bytes(flipped))
    monkeypatch.setattr(data, "_verified", set())
    with pytest.raises(data.DataError, match=r"tiny.en.pt is corrupted \(sha256"):
        data.whisper_checkpoint("tiny.en")

# ----------------------------------------------------------------------------------------------------------
# Read-only folders and files where folders should be


def test_unwritable_out_dir_and_data_folder(tmp_path, real_manifest, init_ckpt, features_dir, monkeypatch,
                                            capsys):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit) as e:  # a file where a parent folder should be
        stage1(tmp_path / "file" / "out", real_manifest, init_ckpt, "--steps", "1")
    assert one_line(e).startswith("error: ") and "file" in str(e.value)
    real_atomic_save = W.atomic_save

    def read_only(obj, path):  # as root, chmod cannot make a folder read-only: the OS error is simulated
        raise PermissionError(errno.EACCES, "Permission denied", str(path))
    monkeypatch.setattr(data, "atomic_save", read_only)  # the feature cache cannot be written: train on
    stage1(tmp_path / "a", real_manifest, init_ckpt, "--steps", "1")
    assert "cannot cache the encoder features" in capsys.readouterr().err
    monkeypatch.setattr(W, "atomic_save", read_only)  # the checkpoint cannot be written: one line
    with pytest.raises(SystemExit) as e:
        stage1(tmp_path / "b", real_manifest, init_ckpt, "--steps", "1")
    assert "stage1.pt: Permission denied: make it writable" in one_line(e)
    monkeypatch.setattr(W, "atomic_save", real_atomic_save)
    monkeypatch.setattr(data, "whisper_checkpoint", lambda name: read_only(None, tmp_path / "weights"))
    with pytest.raises(SystemExit) as e:
        tinyspeech.main(["--weights", "tiny.en"])
    assert "weights: Permission denied" in one_line(e) and "WHISFUSION_DATA" in str(e.value)
    with pytest.raises(SystemExit):
        decode.main(["a.wav", "--out", str(tmp_path / "file")])
    assert "--out" in capsys.readouterr().err

# ----------------------------------------------------------------------------------------------------------
# A checkpoint is never lost or poisoned, and a wrong one is never used in silence


def test_a_diverged_run_never_saves_its_broken_weights(tmp_path, real_manifest, init_ckpt, features_dir):
    """--lr 1e10 blows the weights up at the first update: the loss of the next step is not finite, and the
    check before every checkpoint catches the step that did it. Nothing broken is written, and the message
    does not send the user to a file that does not exist."""
    with pytest.raises(SystemExit) as e:
        stage1(tmp_path, real_manifest, init_ckpt, "--steps", "20", "--ckpt-every", "1", "--lr", "1e10")
    msg = one_line(e)
    assert "diverged at --lr 1e+10" in msg and "no checkpoint of this stage was written" in msg
    assert "--overwrite --lr 1e+09" in msg and not (tmp_path / "stage1.pt").exists()
    stage1(tmp_path / "ok", real_manifest, init_ckpt, "--steps", "2", "--ckpt-every", "1")  # a healthy run saves
    good = ckpt(tmp_path / "ok/stage1.pt")
    assert good["finished"] and all(t.isfinite().all() for t in good["model"].values() if t.is_floating_point())


def test_one_training_run_per_out_dir_and_ctrl_c_saves_the_last_step(tmp_path, real_manifest, init_ckpt):
    """A real second process: the first holds OUT_DIR/train.lock, the second is refused with one line naming
    the holder. Ctrl-C (SIGINT) then stops the first at the end of a step with one line and a checkpoint of
    that step, which --resume finishes."""
    import signal
    import subprocess
    import sys
    import time
    env = dict(os.environ, WHISFUSION_DATA=str(tmp_path / "data"), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, str(Path(train.__file__)), "--stage", "1", "--init", str(init_ckpt), "--train-split",
           str(real_manifest), "--dev-split", str(real_manifest), "--out-dir", str(tmp_path / "out"),
           "--batch-size", "2", "--steps", "100000", "--eval-every", "100000", "--device", "cpu"]
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not (tmp_path / "out/stage1_log.csv").exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.5)  # the log appears just before the loop starts
        assert first.poll() is None, first.communicate()[1][-2000:]
        second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode != 0 and f"in use by another training run (process {first.pid}" in second.stderr
        assert "Traceback" not in second.stderr
        time.sleep(3)
        first.send_signal(signal.SIGINT)
        out, err = first.communicate(timeout=300)
    finally:
        first.kill()
    assert first.returncode != 0 and "Traceback" not in err, err[-2000:]
    assert "interrupted at step" in err and "--resume" in err
    saved = ckpt(tmp_path / "out/stage1.pt")
    assert saved["finished"] is False and saved["step"] >= 1 and not (tmp_path / "out/train.lock").exists()
    done = subprocess.run(cmd[:cmd.index("--steps")] + ["--steps", str(saved["step"] + 2), "--device", "cpu",
                                                        "--resume"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert ckpt(tmp_path / "out/stage1.pt")["step"] == saved["step"] + 2


def test_a_stale_lock_is_taken_over_and_a_foreign_one_is_not(tmp_path, real_manifest, init_ckpt, features_dir,
                                                             capsys):
    import socket
    (tmp_path / "a").mkdir()
    (tmp_path / "a/train.lock").write_text(f"999999999 {socket.gethostname()}\n")  # a process that has ended
    stage1(tmp_path / "a", real_manifest, init_ckpt, "--steps", "1")
    assert "stale lock" in capsys.readouterr().err and not (tmp_path / "a/train.lock").exists()
    (tmp_path / "b").mkdir()
    (tmp_path / "b/train.lock").write_text("123 another-host\n")  # cannot be checked from here: refused
    with pytest.raises(SystemExit) as e:
        stage1(tmp_path / "b", real_manifest, init_ckpt, "--steps", "1")
    assert "in use by another training run (process 123 on another-host)" in one_line(e)


def test_overwrite_keeps_the_earlier_log_until_it_is_replaced(tmp_path, real_manifest, init_ckpt, features_dir):
    stage1(tmp_path, real_manifest, init_ckpt, "--steps", "2")
    log, finished = (tmp_path / "stage1_log.csv").read_text(), (tmp_path / "stage1.pt").read_bytes()
    with killed_at_step(1):  # --overwrite killed before its first checkpoint
        stage1(tmp_path, real_manifest, init_ckpt, "--steps", "2", "--overwrite")
    assert (tmp_path / "stage1_log.prev.csv").read_text() == log and (tmp_path / "stage1.pt").read_bytes() == finished


def test_an_unfinished_stage_is_not_a_silent_start(tmp_path, real_manifest, init_ckpt, features_dir, capsys):
    c = ckpt(init_ckpt)
    c.update(finished=False, step=3, args={"steps": 9, "preset": "tiny"})
    torch.save(c, tmp_path / "stage0.pt")
    with pytest.raises(SystemExit) as e:  # the default init, unfinished: refused with both ways on
        train.main(["--stage", "1", "--out-dir", str(tmp_path), "--train-split", str(real_manifest), "--dev-split",
                    str(real_manifest), "--device", "cpu", "--steps", "1"])
    assert "stage0.pt is unfinished (stage 0 stopped at step 3 of 9): finish it with" in one_line(e)
    assert "--init" in str(e.value)
    stage1(tmp_path / "given", real_manifest, tmp_path / "stage0.pt", "--steps", "1")  # --init: a warning
    assert "stage0.pt is unfinished" in capsys.readouterr().err


def test_resume_refuses_a_flag_that_changes_the_model(tmp_path):
    args = train.get_args(["--stage", "2", "--resume", "--lora-rank", "8", "--out-dir", str(tmp_path)])
    start = (tmp_path / "stage2.pt", {"config": {"lora": {"rank": 4}}, "args": {"preset": "tiny"}})
    with pytest.raises(SystemExit, match=r"--resume: --lora-rank 8 would change the model .*stage2.pt holds \(4\)"):
        train.apply_recipe(args, start)


def test_decoding_refuses_a_text_only_or_broken_model_and_names_an_unfinished_one(tmp_path, tiny_model, capsys):
    W.save_model(tmp_path / "s0.pt", tiny_model, stage=0)
    with pytest.raises(SystemExit) as e:
        decode.main([str(CLIP), "--ckpt", str(tmp_path / "s0.pt"), "--device", "cpu"])
    assert "is a stage-0 checkpoint" in one_line(e) and "python train.py --stage 1" in str(e.value)
    broken = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    broken["wte.weight"][3, 5] = float("nan")
    W.save_model(tmp_path / "nan.pt", tiny_model, stage=2)
    c = ckpt(tmp_path / "nan.pt")
    c["model"] = broken
    torch.save(c, tmp_path / "nan.pt")
    with pytest.raises(SystemExit) as e:
        decode.main([str(CLIP), "--ckpt", str(tmp_path / "nan.pt"), "--device", "cpu"])
    assert "weights hold NaN or inf (wte.weight)" in one_line(e)
    W.save_model(tmp_path / "half.pt", tiny_model, stage=2, step=5, finished=False, args={"steps": 10})
    decode.main([str(CLIP), "--ckpt", str(tmp_path / "half.pt"), "--device", "cpu", "-K", "2"])
    assert "half.pt is unfinished (stage 2 stopped at step 5 of 10)" in capsys.readouterr().err
