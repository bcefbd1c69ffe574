"""timm and RobustBench models end to end: every README route to them, run for real.

These need torch 2.14.1 with torchvision 0.29.1, timm and RobustBench 1.1.1 (the second CI
environment, ``.venv-eco``: ``pip install -e '.[test,timm,robustbench]'``); elsewhere they are
skipped with the reason. ``ROBUSTFAIR_REQUIRE_ECOSYSTEM=1`` (set by .ci/run) turns that skip
into a failure, so a broken environment cannot pass by skipping.

Nothing is downloaded: each test writes random weights where its loader expects them
(RobustBench's ``MODEL_DIR/DATASET/THREAT/NAME.pt`` in the layout RobustBench's ``load_model``
reads for that entry), and the official AutoAttack's pretrained ResNet-18 comes in
pyautoattack's wheel. The README commands run as written plus ``--steps 2`` (and a few points):
the attacks' full budgets would take hours on a CPU and are tested elsewhere.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

from robustfair.cli import main
from robustfair.errors import ModelError
from robustfair.metrics import ClassReport
from robustfair.models.external import file_sha256

from test_data_writers import write_cifar10_binary

README = Path(__file__).resolve().parents[1] / "README.md"
INSTALL = "pip install -e '.[test,timm,robustbench]' (.ci/run builds it as .venv-eco)"
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _why_not() -> str | None:
    """Why the ecosystem cannot run here (None: it can)."""
    from robustfair.models._optional import import_robustbench, import_timm

    try:
        import_timm()
        import_robustbench()
    except ModelError as exc:
        return f"needs timm and RobustBench beside torch 2.14.1 + torchvision 0.29.1: {INSTALL}; here: {exc}"
    return None


MISSING = _why_not()
if MISSING and os.environ.get("ROBUSTFAIR_REQUIRE_ECOSYSTEM", "") not in ("", "0"):
    raise RuntimeError(f"ROBUSTFAIR_REQUIRE_ECOSYSTEM is set but {MISSING}")
pytestmark = [pytest.mark.ecosystem, pytest.mark.skipif(MISSING is not None, reason=str(MISSING))]


# ----------------------------------------------------------------------------- helpers


def _cli(*argv: str, capsys) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_exit_2(capsys, *argv: str) -> str:
    code, out, err = _cli(*argv, capsys=capsys)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("robustfair: error: "), err
    assert "Traceback" not in err
    return lines[0]


def _npz(path: Path, n: int, side: int, classes: list[str], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    np.savez(path, x=rng.integers(0, 256, (n, side, side, 3), dtype=np.uint8),
             y=np.arange(n) % len(classes), classes=np.array(classes))
    return path


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def _commands(block: str) -> list[list[str]]:
    return [shlex.split(line) for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def _readme_command(needle: str) -> list[str]:
    commands = [c for b in _blocks("bash") for c in _commands(b) if any(needle in a for a in c)]
    assert len(commands) == 1, commands
    return commands[0]


def _zoo_model(dataset: str, threat: str, name: str) -> torch.nn.Module:
    """RobustBench's own constructor for a zoo entry (random weights)."""
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    return model_dicts[BenchmarkDataset(dataset)][ThreatModel(threat)][name]["model"]()


def _predictions(model: torch.nn.Module, npz: Path) -> list[int]:
    """The model's own predictions on the npz images scaled to [0, 1] (a reference)."""
    x = torch.from_numpy(np.load(npz)["x"]).permute(0, 3, 1, 2).float() / 255
    with torch.inference_mode():
        return model.eval()(x).argmax(1).tolist()


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """Random weights in RobustBench's layout, each entry saved the way its loader reads it."""
    root = tmp_path_factory.mktemp("rb") / "models"
    torch.manual_seed(0)
    # the CIFAR-10 Standard WRN-28-10, under 'state_dict' with DataParallel's 'module.' prefix,
    # as in RobustBench's released files (its loader strips both)
    wrn = _zoo_model("cifar10", "Linf", "Standard").state_dict()
    path = root / "cifar10" / "Linf" / "Standard.pt"
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": {f"module.{k}": v for k, v in wrn.items()}}, path)
    # a PreActResNet-18 entry: RobustBench reads this one's weights under 'last'
    preact = _zoo_model("cifar10", "Linf", "Andriushchenko2020Understanding").state_dict()
    torch.save({"last": preact}, root / "cifar10" / "Linf" / "Andriushchenko2020Understanding.pt")
    # an ImageNet entry: a torchvision ResNet-18 behind RobustBench's normalisation layer; the
    # released file holds the bare ResNet's weights (the loader adds the 'model.' prefix)
    r18 = _zoo_model("imagenet", "Linf", "Salman2020Do_R18").state_dict()
    path = root / "imagenet" / "Linf" / "Salman2020Do_R18.pt"
    path.parent.mkdir(parents=True)
    torch.save({k[len("model."):]: v for k, v in r18.items() if k.startswith("model.")}, path)
    return root


@pytest.fixture(scope="session")
def c10(tmp_path_factory) -> Path:
    """Ten random 32x32 RGB points with CIFAR-10's class names, as an npz test set."""
    return _npz(tmp_path_factory.mktemp("c10") / "c10.npz", 10, 32, CIFAR10)


@pytest.fixture
def cifar10_data(tmp_path, monkeypatch) -> Path:
    """A four-point CIFAR-10 (WRN-28-10 is slow on a CPU) in its released binary format where ``--dataset cifar10`` looks."""
    root = tmp_path / "data"
    write_cifar10_binary(root / "cifar-10-batches-bin", per_batch=1, n_test=4, names=CIFAR10)
    monkeypatch.setenv("ROBUSTFAIR_DATA", str(root))
    return root


# ----------------------------------------------------------------------------- timm


def _timm_audit(tmp_path, capsys, c10: Path, spec: str, **options) -> None:
    import timm

    net = timm.create_model(spec.split("?")[0][len("timm:"):], num_classes=10, in_chans=3, **options)
    torch.save(net.state_dict(), tmp_path / "w.pth")
    code, out, err = _cli("audit", "--model", spec, "--weights", tmp_path / "w.pth",
                          "--dataset", f"npz:{c10}", "--attack", "pgd", "--steps", "2",
                          "--out", tmp_path / "out", capsys=capsys)
    assert code == 0, err
    report = ClassReport.from_json(tmp_path / "out" / "report.json")
    assert report.meta["model_spec"] == spec
    assert report.meta["weights_sha256"] == file_sha256(tmp_path / "w.pth")
    # the weights really are the ones audited: the clean predictions are the network's own
    assert report.predictions["clean_pred"].tolist() == _predictions(net, c10)
    assert len(report.predictions) == 10 and "pgd_acc" in report.by_class.columns


def test_timm_resnet18_from_the_cli(tmp_path, capsys, c10):
    _timm_audit(tmp_path, capsys, c10, "timm:resnet18")


def test_timm_vit_at_32px_with_options(tmp_path, capsys, c10):
    _timm_audit(tmp_path, capsys, c10, "timm:vit_tiny_patch16_224?img_size=32&patch_size=4",
                img_size=32, patch_size=4)


def test_timm_bad_specs_are_one_line(tmp_path, capsys, c10):
    base = ("--dataset", f"npz:{c10}", "--attack", "pgd", "--out", tmp_path / "o")
    line = _one_line_exit_2(capsys, "audit", "--model", "timm:vit_tiny_patch16_224?img_sise=32", *base)
    assert "has no option 'img_sise'" in line
    line = _one_line_exit_2(capsys, "audit", "--model", "timm:resnet19", *base)
    assert "no model 'resnet19'" in line and "did you mean" in line
    line = _one_line_exit_2(capsys, "audit", "--model", "timm:resnet18?num_classes=5", *base)
    assert "set by robustfair" in line
    line = _one_line_exit_2(capsys, "audit", "--model", "timm:vit_tiny_patch16_224", "--weights",
                            tmp_path / "none.pth", *base)
    assert "does not exist" in line
    assert not (tmp_path / "o").exists()


def test_readme_timm_commands(tmp_path, capsys, monkeypatch, cifar10_data):
    import timm

    monkeypatch.chdir(tmp_path)
    for needle, name, options in (("timm:resnet18", "resnet18", {}),
                                  ("timm:vit_tiny", "vit_tiny_patch16_224", {"img_size": 32, "patch_size": 4})):
        command = _readme_command(needle)
        weights = command[command.index("--weights") + 1]
        torch.save(timm.create_model(name, num_classes=10, in_chans=3, **options).state_dict(), weights)
        code, out, err = _cli(*command[1:], "--steps", "2", capsys=capsys)
        assert code == 0, err
        out_dir = Path(command[command.index("--out") + 1])
        assert ClassReport.from_json(out_dir / "report.json").meta["weights"] == weights


# ----------------------------------------------------------------------------- RobustBench


def test_robustbench_standard_from_the_cli(tmp_path, capsys, model_dir, c10):
    """The explicit form works with any data: an npz test set."""
    code, out, err = _cli("audit", "--model", "robustbench:cifar10/Linf/Standard", "--model-dir",
                          model_dir, "--no-download", "--dataset", f"npz:{c10}", "--attack", "pgd",
                          "--steps", "2", "--limit", "4", "--threads", "2", "--out", tmp_path / "out",
                          capsys=capsys)
    assert code == 0, err
    meta = ClassReport.from_json(tmp_path / "out" / "report.json").meta
    path = model_dir / "cifar10" / "Linf" / "Standard.pt"
    assert meta["weights"] == str(path) and meta["weights_sha256"] == file_sha256(path)
    rb = meta["robustbench"]
    assert (rb["name"], rb["dataset"], rb["threat_model"]) == ("Standard", "cifar10", "Linf")
    # RobustBench 1.1.1's README table: Standard, 94.78% clean, 0.00% AutoAttack, WRN-28-10
    assert rb["published"]["clean_acc"] == 94.78 and rb["published"]["robust_acc"] == 0.0
    assert rb["published"]["architecture"] == "WideResNet-28-10" and rb["published"]["eps"] == "8/255"
    assert "published: clean 94.78%, AutoAttack 0.00% at eps 8/255" in out
    assert "not the same evaluation: attacks pgd here, AutoAttack published" in out
    # the audited network is RobustBench's own load_model of that file
    from robustbench.utils import load_model

    model = load_model("Standard", model_dir=str(model_dir), dataset="cifar10", threat_model="Linf")
    report = ClassReport.from_json(tmp_path / "out" / "report.json")
    assert report.predictions["clean_pred"].tolist() == _predictions(model, c10)[:4]


def test_robustbench_short_form_preact_card(tmp_path, capsys, model_dir, cifar10_data):
    """``robustbench:NAME`` takes cifar10 from --dataset and Linf from --norm; the card shows
    the published numbers."""
    code, out, err = _cli("card", "--model", "robustbench:Andriushchenko2020Understanding",
                          "--dataset", "cifar10", "--norm", "linf", "--model-dir", model_dir,
                          "--no-download", "--attack", "fgsm", "--out", tmp_path / "card",
                          capsys=capsys)
    assert code == 0, err
    html = (tmp_path / "card" / "card.html").read_text()
    assert "published: clean 79.84%, AutoAttack 43.93% at eps 8/255" in html
    assert "Andriushchenko2020Understanding (cifar10, Linf)" in html
    meta = ClassReport.from_json(tmp_path / "card" / "report.json").meta
    assert meta["robustbench"]["published"]["architecture"] == "PreActResNet-18"


def test_explain_a_robustbench_entry(tmp_path, capsys, model_dir, cifar10_data):
    code, out, err = _cli("explain", "--model", "robustbench:Andriushchenko2020Understanding",
                          "--dataset", "cifar10", "--model-dir", model_dir, "--no-download",
                          "--steps", "2", "--margin-steps", "2", "--n-perm", "100",
                          "--out", tmp_path / "why", capsys=capsys)
    assert code == 0, err
    assert "robustfair explain: robustbench:Andriushchenko2020Understanding on cifar10" in out
    meta = json.loads((tmp_path / "why" / "explain.json").read_text())["meta"]
    assert meta["robustbench"]["published"]["clean_acc"] == 79.84


def test_robustbench_imagenet_entry_at_224px(tmp_path, capsys, model_dir):
    classes = [f"n{i:05d}" for i in range(1000)]
    npz = _npz(tmp_path / "in.npz", 4, 224, classes)
    code, out, err = _cli("audit", "--model", "robustbench:imagenet/Linf/Salman2020Do_R18",
                          "--model-dir", model_dir, "--dataset", f"npz:{npz}", "--eps", "4/255",
                          "--attack", "fgsm", "--threads", "2", "--out", tmp_path / "out",
                          capsys=capsys)
    assert code == 0, err
    report = ClassReport.from_json(tmp_path / "out" / "report.json")
    assert report.meta["robustbench"]["published"]["eps"] == "4/255"
    assert "published: clean 52.92%, AutoAttack 25.32% at eps 4/255" in out
    from robustbench.utils import load_model

    model = load_model("Salman2020Do_R18", model_dir=str(model_dir), dataset="imagenet",
                       threat_model="Linf")
    assert report.predictions["clean_pred"].tolist() == _predictions(model, npz)


def test_readme_python_route(tmp_path, monkeypatch, capsys, model_dir, cifar10_data):
    source = next(b for b in _blocks("python") if "load_model(\"Standard\"" in b and "rf.audit" in b)
    fast = source.replace("eps=8/255)", "eps=8/255, steps=2)")  # a quick attack budget
    assert fast.count("steps=2") == 2
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").symlink_to(model_dir)
    exec(compile(fast, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "robust_acc" in out and "airplane" in out


def test_readme_factory_file_route(tmp_path, monkeypatch, capsys, model_dir, cifar10_data):
    source = next(b for b in _blocks("python") if b.startswith("# rb.py"))
    command = _readme_command("rb.py:standard")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").symlink_to(model_dir)
    (tmp_path / "rb.py").write_text(source)
    code, out, err = _cli(*command[1:], "--steps", "2", "--queries", "20", "--threads", "2",
                          capsys=capsys)
    assert code == 0, err
    assert (tmp_path / command[command.index("--out") + 1] / "card.html").is_file()


def test_readme_architecture_module_route(tmp_path, monkeypatch, capsys, model_dir, cifar10_data):
    command = _readme_command("robustbench.model_zoo.architectures.wide_resnet:WideResNet")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").symlink_to(model_dir)
    code, out, err = _cli(*command[1:], "--steps", "2", "--queries", "20", "--threads", "2",
                          capsys=capsys)
    assert code == 0, err
    meta = ClassReport.from_json(tmp_path / command[command.index("--out") + 1] / "report.json").meta
    assert meta["weights_container_key"] == "state_dict" and meta["weights_stripped_prefixes"] == ["module."]


def test_readme_robustbench_card_command(tmp_path, monkeypatch, capsys, model_dir, cifar10_data):
    command = _readme_command("robustbench:Standard")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").symlink_to(model_dir)
    code, out, err = _cli(*command[1:], "--steps", "2", "--queries", "20", "--threads", "2",
                          capsys=capsys)
    assert code == 0, err
    html = (tmp_path / command[command.index("--out") + 1] / "card.html").read_text()
    assert "published: clean 94.78%" in html


def test_official_autoattack_resnet18(tmp_path, capsys, c10):
    """The official AutoAttack's example model and its pretrained weights, both shipped in the
    pyautoattack wheel (examples/resnet.py, examples/model_test.pt)."""
    examples = Path(importlib.util.find_spec("pyautoattack").origin).parent / "examples"
    weights = examples / "model_test.pt"
    code, out, err = _cli("audit", "--model", f"{examples / 'resnet.py'}:ResNet18", "--weights", weights,
                          "--dataset", f"npz:{c10}", "--attack", "pgd", "--steps", "2",
                          "--out", tmp_path / "out", capsys=capsys)
    assert code == 0, err
    report = ClassReport.from_json(tmp_path / "out" / "report.json")
    assert report.meta["weights_sha256"] == file_sha256(weights)
    # the same predictions as the model loaded the way AutoAttack's examples/eval.py does
    spec = importlib.util.spec_from_file_location("aa_resnet", examples / "resnet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.ResNet18()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    assert report.predictions["clean_pred"].tolist() == _predictions(model, c10)


# ----------------------------------------------------------------------------- bad input


def test_robustbench_bad_input_is_one_line(tmp_path, capsys, model_dir, c10, monkeypatch):
    base = ("--dataset", f"npz:{c10}", "--attack", "pgd", "--out", tmp_path / "o")
    # an unknown name: a did-you-mean from the zoo
    line = _one_line_exit_2(capsys, "audit", "--model", "robustbench:cifar10/Linf/Standrad",
                            "--model-dir", model_dir, *base)
    assert "no cifar10 Linf model 'Standrad' (did you mean 'Standard'?)" in line
    # a threat model the data set does not have
    line = _one_line_exit_2(capsys, "audit", "--model", "robustbench:cifar100/L2/Standard", *base)
    assert "RobustBench has no cifar100 L2 models; its cifar100 threat models are Linf, corruptions" in line
    # a name filed under another threat model
    line = _one_line_exit_2(capsys, "audit", "--model", "robustbench:cifar10/L2/Carmon2019Unlabeled", *base)
    assert "it is in cifar10/Linf" in line
    # the short form without a RobustBench data set
    line = _one_line_exit_2(capsys, "audit", "--model", "robustbench:Standard", *base)
    assert "robustbench:cifar10/Linf/Standard" in line
    # a checkpoint of another architecture where Standard's should be
    wrong = tmp_path / "wrong"
    (wrong / "cifar10" / "Linf").mkdir(parents=True)
    torch.save(_zoo_model("cifar10", "Linf", "Andriushchenko2020Understanding").state_dict(),
               wrong / "cifar10" / "Linf" / "Standard.pt")
    line = _one_line_exit_2(capsys, "audit", "--model", "robustbench:cifar10/Linf/Standard",
                            "--model-dir", wrong, *base)
    assert f"{wrong}/cifar10/Linf/Standard.pt does not fit RobustBench's Standard (WideResNet-28-10)" in line
    assert "missing" in line and "unexpected" in line
    # a checkpoint holding a pickled object is refused before RobustBench reads it
    torch.save(torch.nn.Linear(2, 2), wrong / "cifar10" / "Linf" / "Standard.pt")
    line = _one_line_exit_2(capsys, "audit", "--model", "robustbench:cifar10/Linf/Standard",
                            "--model-dir", wrong, *base)
    assert "not a plain state dict" in line
    # a missing checkpoint under --no-download: the exact path and where it comes from
    empty = tmp_path / "empty"
    line = _one_line_exit_2(capsys, "audit", "--model", "robustbench:cifar10/Linf/Carmon2019Unlabeled",
                            "--model-dir", empty, "--no-download", *base)
    assert f"{empty}/cifar10/Linf/Carmon2019Unlabeled.pt is missing" in line and "drive.google.com" in line
    # ... and offline (every connection refused): the same path, and nothing left behind
    for var in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    line = _one_line_exit_2(capsys, "audit", "--model", "robustbench:cifar10/Linf/Carmon2019Unlabeled",
                            "--model-dir", empty, *base)
    assert f"{empty}/cifar10/Linf/Carmon2019Unlabeled.pt is missing and could not be downloaded" in line
    assert not empty.exists() and not (tmp_path / "o").exists()
    # RobustBench's models already take [0, 1] inputs and carry their own weights
    line = _one_line_exit_2(capsys, "audit", "--model", "robustbench:cifar10/Linf/Standard",
                            "--model-dir", model_dir, "--normalize", "cifar10", *base)
    assert "--normalize does not go with" in line
