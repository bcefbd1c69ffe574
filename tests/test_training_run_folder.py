"""A training run's folder: state.json is never trusted, the folder has one writer, temporaries of
killed writes are swept, and a full disk or a refused config loses nothing."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import pytest

from robustfair.training import checkpoint as ckpt

from limited import SRC, assert_one_line_error, cli, cli_all

TINY = ["--dataset", "digits", "--model", "small_cnn", "--model-arg", "width=4",
        "--model-arg", "hidden=16", "--epochs", "1", "--steps", "1", "--eval-steps", "1",
        "--batch-size", "256", "--eps", "0.2", "--no-augment", "--no-progress",
        "--objective", "standard", "--threads", "1"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished one-epoch run (copy it before changing it)."""
    from robustfair.cli import main

    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", "--out", str(out), *TINY]) == 0
    return out


def _copy(finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    return run


def _edit_manifest(run, **changes):
    manifest = json.loads((run / ckpt.MANIFEST).read_text())
    manifest.update(changes)
    (run / ckpt.MANIFEST).write_text(json.dumps(manifest))
    return manifest


def _train(run, capsys, *extra):
    return cli(["train", "--out", run, *TINY, *extra], capsys)


# ---------------------------------------------------------------- state.json is not trusted
@pytest.mark.parametrize("name", ["../victim.txt", "/tmp/robustfair-victim.txt", "sub/x"])
def test_state_json_cannot_name_files_outside_the_run(finished, tmp_path, capsys, name):
    run = _copy(finished, tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "victim.txt.partial").write_text("evil")  # what resume would rename over it
    manifest = json.loads((run / ckpt.MANIFEST).read_text())
    _edit_manifest(run, files={**manifest["files"], name: ckpt.file_sha256(victim)})
    code, err = _train(run, capsys)
    assert_one_line_error(code, err, "not a plain file name in the run")
    assert victim.read_text() == "precious"


def test_state_json_epoch_is_not_trusted(finished, tmp_path, capsys):
    run = _copy(finished, tmp_path)
    _edit_manifest(run, epoch=10**6, complete=False)
    code, out, err = cli_all(["train", "--out", run, *TINY], capsys)
    assert_one_line_error(code, err, "epoch 1000000 is beyond the config's 1 epochs")
    assert "trained" not in out
    run2 = _copy(finished, tmp_path / "b")
    manifest = _edit_manifest(run2, complete=False)
    _edit_manifest(run2, history=manifest["history"] * 2)  # two rows for epoch 1: fine
    _edit_manifest(run2, history=[])
    code, err = _train(run2, capsys)
    assert_one_line_error(code, err, "does not match the history")


@pytest.mark.parametrize("field, value", [
    ("epoch", "1"), ("epoch", True), ("global_step", -3), ("config", []), ("files", ["x"]),
    ("history", "rows"), ("history", [{"epoch": "1"}]), ("complete", "yes"), ("best", 3),
    ("optimizer", [1, 2]), ("mitigations", "none"), ("ema_updates", 1.5), ("stopped", 7),
])
def test_state_json_fields_of_the_wrong_type_are_one_line(finished, tmp_path, capsys,
                                                          field, value):
    run = _copy(finished, tmp_path)
    _edit_manifest(run, **{field: value})
    code, err = _train(run, capsys)
    assert_one_line_error(code, err, f"{field!r} must be")


# ---------------------------------------------------------------- temporaries
def test_temporaries_of_killed_writes_are_swept_on_resume(finished, tmp_path, capsys):
    run = _copy(finished, tmp_path)
    left = [".checkpoint.safetensors.k1x2.tmp", ".state.json.abc.tmp",
            ".epochs.csv.partial.zz9.tmp", "state.safetensors.partial"]
    for name in left:
        (run / name).write_bytes(b"half")
    (run / ".notes.tmp").write_text("the user's own")  # not a run file: left alone
    code, out, _ = cli_all(["train", "--out", run, *TINY], capsys)
    assert code == 0 and "already complete" in out
    assert not any((run / name).exists() for name in left)
    assert (run / ".notes.tmp").read_text() == "the user's own"


def test_a_fresh_start_sweeps_what_a_killed_first_epoch_left(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".checkpoint.safetensors.partial.k9.tmp").write_bytes(b"half")
    code, _ = _train(run, capsys)
    assert code == 0
    assert not list(run.glob(".*.tmp"))


# ---------------------------------------------------------------- one writer
def test_a_second_run_into_a_busy_folder_is_refused(finished, tmp_path, capsys):
    run = _copy(finished, tmp_path)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    holder = subprocess.Popen(  # another robustfair process, busy with this folder
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys
            from robustfair._lock import folder_lock
            with folder_lock({str(run)!r}, "a training run"):
                print("held", flush=True)
                sys.stdin.read()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={"PYTHONPATH": SRC, "PATH": ""})
    try:
        assert holder.stdout.readline().strip() == "held"
        code, err = _train(run, capsys, "--epochs", "2")  # a different config, at once
        assert_one_line_error(code, err, "in use by another robustfair process")
        code, err = _train(run, capsys, "--force")
        assert_one_line_error(code, err, "in use by another robustfair process")
        assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # nothing lost
    finally:
        holder.communicate("", timeout=30)
    code, out, _ = cli_all(["train", "--out", run, *TINY], capsys)  # the lock died with it
    assert code == 0 and "already complete" in out


# ---------------------------------------------------------------- refused configs
def test_a_refused_mitigation_combination_does_not_block_the_corrected_command(tmp_path, capsys):
    run = tmp_path / "run"
    adversarial = ["--objective", "pgd_at"]
    code, err = _train(run, capsys, *adversarial, "--mitigation", "class_eps:eps=3:0.1",
                       "--mitigation", "cfa")
    assert_one_line_error(code, err, "both set class_eps()")
    code, err = _train(run, capsys, *adversarial, "--mitigation", "class_eps:eps=3:0.1")
    assert code == 0, err
    manifest = ckpt.read_manifest(run)
    assert [m["name"] for m in manifest["config"]["mitigations"]] == ["class_eps"]


# ---------------------------------------------------------------- a full disk
@pytest.mark.slow  # a training and a study in a child process
def test_a_full_disk_is_one_line_and_the_run_resumes_afterwards(tmp_path):
    """RLIMIT_FSIZE makes every write past the limit fail with EFBIG, as a full disk fails
    with ENOSPC: 0 bytes is a full disk, 6000 bytes lets config.json through but not the
    epoch's checkpoint."""
    spec = tmp_path / "spec.yaml"
    spec.write_text("grid: {seed: [0]}\nfixed: {dataset: digits, model: small_cnn, "
                    "model_kwargs: {width: 4, hidden: 16}, epochs: 1, objective: standard}\n")
    run = tmp_path / "run"
    script = textwrap.dedent(f"""
        import resource, signal, tempfile
        import torch._dynamo  # imported by the optimiser; its import writes caches
        from robustfair.cli import main
        from robustfair.data import load_dataset
        import robustfair.training, robustfair.study.executors
        load_dataset("digits")  # sklearn's import probes the disk too
        tempfile.gettempdir()   # found once, then cached
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
        def limited(limit, argv):
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
            try:
                print(main(argv), flush=True)
            finally:
                resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
        train = ["train", "--out", {str(run)!r}, *{TINY!r}]
        limited(0, train)
        limited(0, ["study", "run", {str(spec)!r}, "--out", {str(tmp_path / "study")!r},
                    "--no-progress"])
        limited(6000, train)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, env={"PYTHONPATH": SRC, "PATH": "", "OMP_NUM_THREADS": "1",
                                            "ROBUSTFAIR_DATA": str(tmp_path / "data")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["2", "2", "2"], (proc.stdout, proc.stderr[-3000:])
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 3 and all(e.startswith("robustfair: error:") for e in errors), proc.stderr
    assert "File too large" in errors[0] and "File too large" in errors[1]
    assert "cannot write the training state" in errors[2]
    # nothing half-written: no partial or temporary file, and the same command now finishes
    assert not list(run.glob("*.partial")) and not list(run.glob(".*.tmp"))
    from robustfair.cli import main
    assert main(["train", "--out", str(run), *TINY]) == 0
    assert ckpt.read_manifest(run)["complete"] is True
