"""Bring your own model and data to ``robustfair audit``: a user's factory and state dict, DDP
prefixes, ``--normalize``, tuple outputs, image folders, npz test sets, timm; and every bad
input as one line and exit 2.

The reference for each CLI run is :func:`robustfair.audit` on the same network built by hand in
Python: the CLI must build, load and wrap the model so that every prediction is the same.
"""
from __future__ import annotations

import hashlib
import importlib.util
import sys
import textwrap
import types

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

import robustfair as rf
from robustfair.cli import main
from robustfair.data import load_dataset, load_npz
from robustfair.metrics import ClassReport
from robustfair.models import Normalize, NormalizedModel, SelectOutput
from robustfair.models.external import load_weights, normalization, read_state_dict

from digits_model import fit

USER_NET = textwrap.dedent("""\
    import torch
    from torch import nn


    class DigitsNet(nn.Module):
        def __init__(self, num_classes=10, in_channels=1):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(),
                                          nn.Flatten())
            self.head = nn.Linear(8 * 8 * 8, num_classes)

        def forward(self, x):
            return self.head(self.features(x))


    class WithFeatures(DigitsNet):
        def forward(self, x):
            f = self.features(x)
            return self.head(f), f


    def build(num_classes, in_channels):
        return DigitsNet(num_classes, in_channels)


    def build_two_outputs(num_classes, in_channels):
        return WithFeatures(num_classes, in_channels)


    def build_seven_classes():
        return DigitsNet(7, 1)
    """)
IMAGENET_MEAN, IMAGENET_STD = normalization("imagenet", channels=3)
LIMIT = 120
ATTACK = ["--attack", "fgsm", "--eps", "0.1"]


def _train(net: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return fit(net, x, y, epochs)


def _rgb(x: torch.Tensor) -> torch.Tensor:
    return x.repeat(1, 3, 1, 1)


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """The user's model file, two trained nets (grey; RGB on ImageNet-normalised inputs) and
    their weights in the layouts the tests load."""
    root = tmp_path_factory.mktemp("byo")
    (root / "user_net.py").write_text(USER_NET)
    spec = importlib.util.spec_from_file_location("byo_user_net_reference", root / "user_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ds = load_dataset("digits")
    x, y = ds.train.x.float() / 255, ds.train.y
    grey = _train(module.build(10, 1), x, y)
    norm = Normalize(IMAGENET_MEAN, IMAGENET_STD)
    rgb_net = module.build(10, 3)
    _train(nn.Sequential(norm, rgb_net), _rgb(x), y)  # trained on normalised inputs
    state = grey.state_dict()
    torch.save(state, root / "grey.pt")
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3},
               root / "ddp.pth")
    torch.save(rgb_net.state_dict(), root / "rgb.pt")
    sys.modules[spec.name] = module  # pickling a whole model looks its class up by module
    try:
        torch.save(grey, root / "pickled_module.pt")  # a whole model: must be refused
    finally:
        del sys.modules[spec.name]
    torch.save({k: v for k, v in state.items() if k != "head.bias"}, root / "missing.pt")
    test = ds.test
    np.savez(root / "rgb_nhwc.npz", x=_rgb(test.x).permute(0, 2, 3, 1).numpy(), y=test.y.numpy(),
             classes=np.array(ds.classes))
    folder = root / "images"
    for i in range(LIMIT):  # the first LIMIT test images, one grey PNG each
        where = folder / ds.classes[int(test.y[i])]
        where.mkdir(parents=True, exist_ok=True)
        Image.fromarray(test.x[i, 0].numpy(), mode="L").save(where / f"{i:04d}.png")
    return {"root": root, "module": module, "grey": grey, "rgb": rgb_net, "ds": ds}


def _reference(model: nn.Module, x: torch.Tensor, y: torch.Tensor, classes) -> ClassReport:
    return rf.audit(model, x, y, attacks=[rf.build_attack("fgsm", eps=0.1)], classes=classes,
                    progress=False)


def _cli(out, *args) -> int:
    return main(["audit", *args, *ATTACK, "--out", str(out)])


def _preds(path) -> pd.DataFrame:
    return ClassReport.from_json(path / "report.json").predictions


def test_a_users_factory_and_state_dict(user, tmp_path, capsys):
    root, ds = user["root"], user["ds"]
    out = tmp_path / "a"
    assert _cli(out, "--model", f"{root / 'user_net.py'}:build", "--weights", str(root / "grey.pt"),
                "--dataset", "digits", "--limit", str(LIMIT)) == 0, capsys.readouterr().err
    report = ClassReport.from_json(out / "report.json")
    expected = _reference(user["grey"], ds.test.x[:LIMIT], ds.test.y[:LIMIT], ds.classes)
    pd.testing.assert_frame_equal(report.predictions, expected.predictions)
    assert report.overall["clean_acc"] > 0.85  # the trained weights were loaded, not a fresh init
    assert report.meta["model_spec"].endswith("user_net.py:build")
    assert report.meta["weights_sha256"] == hashlib.sha256((root / "grey.pt").read_bytes()).hexdigest()
    assert len(report.meta["data_sha256"]) == 64

    # audit also writes the adversarial confusion matrix, and shows it in report.md
    confusion = pd.read_csv(out / "confusion.csv", index_col=0, dtype={"true": str})
    assert confusion.to_numpy().tolist() == report.confusion("worst").to_numpy().tolist()
    md = (out / "report.md").read_text()
    assert "## Confusion under attack" in md
    row = report.confusion("worst").loc["8"]
    assert "| 8 | " + " | ".join(str(int(v)) for v in row) + " |" in md


def test_a_ddp_prefixed_state_dict_under_a_state_dict_key(user, tmp_path, capsys):
    root = user["root"]
    args = ["--model", f"{root / 'user_net.py'}:build", "--dataset", "digits", "--limit", str(LIMIT)]
    assert _cli(tmp_path / "plain", *args, "--weights", str(root / "grey.pt")) == 0
    assert _cli(tmp_path / "ddp", *args, "--weights", str(root / "ddp.pth")) == 0, capsys.readouterr().err
    pd.testing.assert_frame_equal(_preds(tmp_path / "ddp"), _preds(tmp_path / "plain"))
    meta = ClassReport.from_json(tmp_path / "ddp" / "report.json").meta
    assert meta["weights_container_key"] == "state_dict" and meta["weights_stripped_prefixes"] == ["module."]


def test_a_model_trained_on_imagenet_normalised_inputs_and_an_npz_test_set(user, tmp_path, capsys):
    root, ds = user["root"], user["ds"]
    args = ["--model", f"{root / 'user_net.py'}:build", "--weights", str(root / "rgb.pt"),
            "--dataset", f"npz:{root / 'rgb_nhwc.npz'}", "--limit", str(LIMIT)]
    assert _cli(tmp_path / "norm", *args, "--normalize", "imagenet") == 0, capsys.readouterr().err
    report = ClassReport.from_json(tmp_path / "norm" / "report.json")
    wrapped = NormalizedModel(Normalize(IMAGENET_MEAN, IMAGENET_STD), user["rgb"])
    expected = _reference(wrapped, _rgb(ds.test.x[:LIMIT]), ds.test.y[:LIMIT], ds.classes)
    pd.testing.assert_frame_equal(report.predictions, expected.predictions)
    assert report.classes == ds.classes and report.overall["clean_acc"] > 0.85
    assert report.meta["normalize"]["mean"] == IMAGENET_MEAN

    # without --normalize the same weights see the wrong inputs
    assert _cli(tmp_path / "raw", *args) == 0
    raw = ClassReport.from_json(tmp_path / "raw" / "report.json")
    assert raw.overall["clean_acc"] < report.overall["clean_acc"] - 0.1


def test_npz_layouts_give_the_same_images(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (5, 3, 6, 6), dtype=np.uint8)
    np.savez(tmp_path / "nchw.npz", x=x, y=np.arange(5))
    np.savez(tmp_path / "nhwc.npz", x=x.transpose(0, 2, 3, 1), y=np.arange(5))
    a, b = load_npz(tmp_path / "nchw.npz"), load_npz(tmp_path / "nhwc.npz")
    assert torch.equal(a.test.x, b.test.x) and torch.equal(a.test.x, torch.from_numpy(x))
    assert a.classes == ["0", "1", "2", "3", "4"] and len(a.train) == 0


def test_a_tuple_output_model_is_refused_then_selected(user, tmp_path, capsys):
    root = user["root"]
    args = ["--model", f"{root / 'user_net.py'}:build_two_outputs", "--weights", str(root / "grey.pt"),
            "--dataset", "digits", "--limit", str(LIMIT)]
    assert _cli(tmp_path / "tuple", *args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--output-index" in err and "tuple of 2 outputs" in err
    assert not (tmp_path / "tuple").exists()

    assert _cli(tmp_path / "picked", *args, "--output-index", "0") == 0
    assert _cli(tmp_path / "plain", "--model", f"{root / 'user_net.py'}:build", "--weights",
                str(root / "grey.pt"), "--dataset", "digits", "--limit", str(LIMIT)) == 0
    pd.testing.assert_frame_equal(_preds(tmp_path / "picked"), _preds(tmp_path / "plain"))


def test_select_output_by_position_and_by_key():
    class Both(nn.Module):
        def forward(self, x):
            return {"logits": x * 2, "features": x}

    x = torch.rand(2, 3)
    assert torch.equal(SelectOutput(Both(), "logits")(x), x * 2)
    assert torch.equal(SelectOutput(nn.Identity(), 1)((x, x + 1)), x + 1)


def test_an_image_folder_from_the_cli(user, tmp_path, capsys):
    root, ds = user["root"], user["ds"]
    assert _cli(tmp_path / "folder", "--model", f"{root / 'user_net.py'}:build", "--weights",
                str(root / "grey.pt"), "--dataset", "image_folder", "--data-dir",
                str(root / "images"), "--grey") == 0, capsys.readouterr().err
    report = ClassReport.from_json(tmp_path / "folder" / "report.json")
    assert len(report.predictions) == LIMIT  # a plain folder of class folders is audited whole
    # the folder holds the first LIMIT test images, read back in class order
    order = np.argsort(ds.test.y[:LIMIT].numpy(), kind="stable")
    expected = _reference(user["grey"], ds.test.x[:LIMIT][order], ds.test.y[:LIMIT][order],
                          [c for c in ds.classes if (root / "images" / c).is_dir()])
    assert report.classes == expected.classes
    assert report.predictions["clean_pred"].tolist() == expected.predictions["clean_pred"].tolist()


def test_image_folder_options_are_checked(user, tmp_path, capsys):
    model = ["--model", f"{user['root'] / 'user_net.py'}:build", "--weights", str(user["root"] / "grey.pt")]
    cases = [(["--dataset", "image_folder"], "needs its folder: --data-dir FOLDER"),
             (["--dataset", "digits", "--grey"], "apply to --dataset image_folder"),
             (["--dataset", "image_folder", "--data-dir", str(user["root"] / "images"), "--split", "train"],
              "audited whole; drop --split train")]
    for args, message in cases:
        assert _cli(tmp_path / "out", *model, *args) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_package_module_factory(user, tmp_path, monkeypatch, capsys):
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(USER_NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _cli(tmp_path / "mod", "--model", "mypkg.nets:build", "--weights", str(user["root"] / "grey.pt"),
                "--dataset", "digits", "--limit", "40") == 0, capsys.readouterr().err
    sys.modules.pop("mypkg.nets", None)
    sys.modules.pop("mypkg", None)


def test_timm_spec_reaches_timm_create_model(user, tmp_path, monkeypatch, capsys):
    """The timm:NAME plumbing, with timm replaced by a stand-in that records its call."""
    calls = []

    def create_model(name, pretrained=False, **kwargs):
        calls.append((name, pretrained, kwargs))
        return user["module"].build(kwargs.get("num_classes", 10), kwargs["in_chans"])

    monkeypatch.setitem(sys.modules, "timm", types.SimpleNamespace(create_model=create_model))
    root = user["root"]
    assert _cli(tmp_path / "t", "--model", "timm:tiny_net", "--weights", str(root / "grey.pt"),
                "--dataset", "digits", "--limit", str(LIMIT)) == 0, capsys.readouterr().err
    assert calls == [("tiny_net", False, {"num_classes": 10, "in_chans": 1})]
    assert _cli(tmp_path / "plain", "--model", f"{root / 'user_net.py'}:build", "--weights",
                str(root / "grey.pt"), "--dataset", "digits", "--limit", str(LIMIT)) == 0
    pd.testing.assert_frame_equal(_preds(tmp_path / "t"), _preds(tmp_path / "plain"))
    # without --weights: timm's own pretrained weights and head
    assert _cli(tmp_path / "p", "--model", "timm:tiny_net", "--dataset", "digits", "--limit", "20") == 0
    assert calls[-1] == ("tiny_net", True, {"in_chans": 1})


def _timm_imports() -> str | None:
    """Why timm cannot be used here (None: it can)."""
    if importlib.util.find_spec("timm") is None:
        return "timm is not installed (pip install 'robustfair[timm]'; .ci/run runs this in .venv-eco)"
    try:
        import timm  # noqa: F401
    except Exception as exc:  # e.g. a torchvision that does not match torch
        return f"timm does not import here: {type(exc).__name__}: {str(exc).splitlines()[0]}"
    return None


TIMM_MISSING = _timm_imports()


@pytest.mark.ecosystem
@pytest.mark.skipif(TIMM_MISSING is not None, reason=str(TIMM_MISSING))
def test_a_real_timm_model(tmp_path, capsys):
    import timm

    net = timm.create_model("resnet10t", pretrained=False, num_classes=10, in_chans=1)
    torch.save(net.state_dict(), tmp_path / "timm.pt")
    assert _cli(tmp_path / "out", "--model", "timm:resnet10t", "--weights", str(tmp_path / "timm.pt"),
                "--dataset", "digits", "--limit", "20") == 0, capsys.readouterr().err
    report = ClassReport.from_json(tmp_path / "out" / "report.json")
    test = load_dataset("digits").test
    expected = _reference(net.eval(), test.x[:20], test.y[:20], [str(i) for i in range(10)])
    assert report.predictions["clean_pred"].tolist() == expected.predictions["clean_pred"].tolist()


# ------------------------------------------------------------------------------ bad input
BAD = [
    ("pickled module", lambda r: ["--model", f"{r / 'user_net.py'}:build", "--weights", str(r / "pickled_module.pt")],
     ["weights_only", "pickled byo_user_net_reference.DigitsNet", "save model.state_dict()"]),
    ("missing keys", lambda r: ["--model", f"{r / 'user_net.py'}:build", "--weights", str(r / "missing.pt")],
     ["missing 1 key(s): head.bias"]),
    ("wrong class count", lambda r: ["--model", f"{r / 'user_net.py'}:build_seven_classes"],
     ["outputs 7 class scores", "digits has 10 classes"]),
    ("no such factory", lambda r: ["--model", f"{r / 'user_net.py'}:nope"],
     ["has no 'nope'", "it defines: DigitsNet, WithFeatures, build"]),
    ("syntax error", lambda r: ["--model", f"{r / 'broken.py'}:build"],
     ["broken.py, line 2: syntax error"]),
    ("no such file", lambda r: ["--model", f"{r / 'absent.py'}:build"], ["does not exist"]),
    ("no such module", lambda r: ["--model", "no_such_pkg_xyz.nets:build"], ["cannot import module"]),
    ("untrained robustfair name", lambda r: ["--model", "small_cnn"], ["give its --weights"]),
    ("weights with a checkpoint", lambda r: ["--checkpoint", "x.safetensors", "--weights", str(r / "grey.pt")],
     ["--weights goes with --model"]),
    ("wrong file type", lambda r: ["--model", f"{r / 'user_net.py'}:build", "--weights", str(r / "user_net.py")],
     [".safetensors or a PyTorch state dict"]),
    ("bad normalize", lambda r: ["--model", f"{r / 'user_net.py'}:build", "--weights", str(r / "grey.pt"),
                                 "--normalize", "imagenet"], ["3-channel images but the data has 1"]),
]


@pytest.mark.parametrize("name,args,expected", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_and_exit_2(user, tmp_path, capsys, name, args, expected):
    root = user["root"]
    (root / "broken.py").write_text("import torch\ndef build(:\n    pass\n")
    out = tmp_path / "out"
    assert _cli(out, *args(root), "--dataset", "digits", "--limit", "20") == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("robustfair: error: "), captured.err
    for text in expected:
        assert text in lines[0], lines[0]
    assert not out.exists() and "Traceback" not in captured.err


def test_weights_loader_names_missing_unexpected_and_misshapen_keys(user, tmp_path):
    state = dict(user["grey"].state_dict())
    state["extra.weight"] = torch.zeros(1)
    state["head.weight"] = torch.zeros(3, 512)
    del state["head.bias"]
    torch.save(state, tmp_path / "odd.pt")
    with pytest.raises(rf.RobustfairError) as err:
        load_weights(user["module"].build(10, 1), tmp_path / "odd.pt")
    text = str(err.value)
    assert "missing 1 key(s): head.bias" in text and "unexpected 1 key(s): extra.weight" in text
    assert "wrong shape for head.weight ([3, 512] in the weights, [10, 512] in the model)" in text
    assert "\n" not in text


def test_safetensors_weights_read_without_pickle(user, tmp_path):
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in user["grey"].state_dict().items()}
    save_file(state, tmp_path / "w.safetensors")
    loaded, where = read_state_dict(tmp_path / "w.safetensors")
    assert where == "" and all(torch.equal(loaded[k], state[k]) for k in state)


def test_lightning_and_compile_prefixes_are_unwrapped_only_when_the_model_lacks_them(user, tmp_path):
    state = user["grey"].state_dict()
    torch.save({"model": {f"model._orig_mod.{k}": v for k, v in state.items()}}, tmp_path / "l.ckpt")
    net = user["module"].build(10, 1)
    info = load_weights(net, tmp_path / "l.ckpt")
    assert info["container_key"] == "model" and info["stripped_prefixes"] == ["model.", "_orig_mod."]
    assert all(torch.equal(net.state_dict()[k], v) for k, v in state.items())

    # a model whose own keys start with "model." keeps the prefix of the file
    wrapped = SelectOutput(user["module"].build(10, 1), 0)
    torch.save({f"model.{k}": v for k, v in state.items()}, tmp_path / "w.pt")
    assert load_weights(wrapped, tmp_path / "w.pt")["stripped_prefixes"] == []
