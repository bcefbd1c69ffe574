"""Checkpoints: safetensors weights + JSON header; round trips exactly; damaged, foreign and
malicious files are refused with one-line ModelErrors and never executed; a small file whose
header describes a huge model is refused before the model is built."""
import json
import os
import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import robustfair as rf
from robustfair.errors import ModelError
from robustfair.models import (
    Normalize,
    NormalizedModel,
    build_model,
    load_model,
    read_checkpoint_metadata,
    register_model,
    save_model,
)
from robustfair.models import _base

from limited import run_limited

DIGIT_META = {"dataset": "digits", "classes": [str(i) for i in range(10)], "epochs": 3}


@pytest.fixture
def registry():
    """Register test-only models without leaving them in the global registry afterwards."""
    added = []

    def add(name, fn):
        register_model(name)(fn)
        added.append(name)

    yield add
    for name in added:
        _base.MODELS.unregister(name)


def trained_a_little(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Move batch-norm statistics and weights off their initial values."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    for _ in range(2):
        loss = model(x).logsumexp(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def one_line_error(fn, *args, match: str, **kwargs) -> str:
    with pytest.raises(ModelError) as err:
        fn(*args, **kwargs)
    text = str(err.value)
    assert "\n" not in text, text
    assert match in text, text
    return text


@pytest.mark.parametrize("name,kwargs,geometry", [
    ("small_cnn", {}, (1, 8)),
    ("mlp", {"hidden": [32, 16]}, (1, 8)),
    ("preact_resnet18", {"width": 4}, (3, 32)),
    ("wide_resnet", {"depth": 10, "widen_factor": 1, "dropout": 0.3}, (3, 16)),
    ("densenet121", {"growth_rate": 4}, (3, 16)),
])
def test_round_trip_is_exact(tmp_path, name, kwargs, geometry):
    channels, size = geometry
    model = build_model(name, num_classes=10, in_channels=channels, image_size=size,
                        mean=[0.3] * channels, std=[0.2] * channels, **kwargs)
    x = torch.rand(4, channels, size, size)
    trained_a_little(model, x)

    path = save_model(model, tmp_path / "ckpt.safetensors", metadata=DIGIT_META)
    assert path == tmp_path / "ckpt.safetensors"
    loaded = load_model(path, device="cpu")

    assert not loaded.training
    assert loaded.robustfair_config == model.robustfair_config
    assert loaded.robustfair_metadata == DIGIT_META
    original = model.state_dict()
    restored = loaded.state_dict()
    assert original.keys() == restored.keys()
    for key in original:  # weights, BN running stats and num_batches_tracked, bit for bit
        assert torch.equal(original[key], restored[key]), key
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_header_is_the_single_source_of_truth(tmp_path):
    model = build_model("small_cnn", num_classes=10, in_channels=1, image_size=8)
    path = save_model(model, tmp_path / "m.safetensors", metadata=DIGIT_META)
    info = read_checkpoint_metadata(path)
    assert info["config"] == model.robustfair_config
    assert info["metadata"] == DIGIT_META
    assert info["format"] == 1 and info["robustfair_version"] == rf.__version__
    # the same JSON, read with nothing but the safetensors library
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        assert json.loads(f.metadata()["robustfair"])["config"] == model.robustfair_config
    assert sorted(os.listdir(tmp_path)) == ["m.safetensors"]  # no side files, no temp files


def test_top_level_exports_and_default_device(tmp_path):
    model = build_model("mlp", num_classes=3, in_channels=1, image_size=8, hidden=[8])
    path = rf.save_model(model, str(tmp_path / "sub" / "dir" / "m.safetensors"))  # makes dirs
    loaded = rf.load_model(path)
    assert loaded.robustfair_metadata == {}
    assert next(loaded.parameters()).device == rf._device.resolve_device(None)


def test_resaving_a_loaded_model_keeps_its_metadata(tmp_path):
    model = build_model("mlp", num_classes=3, in_channels=1, image_size=8, hidden=[8])
    first = load_model(save_model(model, tmp_path / "a.safetensors", metadata={"run": 1}),
                       device="cpu")
    again = save_model(first, tmp_path / "b.safetensors")
    assert read_checkpoint_metadata(again)["metadata"] == {"run": 1}


def test_saving_and_loading_do_not_move_the_random_stream(tmp_path):
    model = build_model("small_cnn", num_classes=10, in_channels=1, image_size=8)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load_model(save_model(model, tmp_path / "m.safetensors"), device="cpu")
    assert torch.equal(torch.rand(3), expected)


def test_channels_last_and_half_precision_models_save(tmp_path):
    model = build_model("small_cnn", num_classes=10, in_channels=1, image_size=8).eval()
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        expected = model(x)
    model = model.to(memory_format=torch.channels_last)
    loaded = load_model(save_model(model, tmp_path / "cl.safetensors"), device="cpu")
    with torch.no_grad():
        assert torch.allclose(loaded(x), expected, atol=1e-6)
    half = build_model("mlp", num_classes=3, in_channels=1, image_size=8, hidden=[8]).half()
    loaded = load_model(save_model(half, tmp_path / "half.safetensors"), device="cpu")
    assert torch.equal(loaded[1].classifier.weight, half[1].classifier.weight.float())


class TiedNet(nn.Module):
    """A user network whose classifier reuses the embedding matrix (shared storage)."""

    def __init__(self, num_classes, in_channels, image_size):
        super().__init__()
        self.embed = nn.Linear(in_channels * image_size * image_size, num_classes, bias=False)
        self.out = nn.Linear(in_channels * image_size * image_size, num_classes, bias=False)
        self.out.weight = self.embed.weight

    def forward(self, x):
        flat = torch.flatten(x, 1)
        return self.embed(flat) + self.out(flat)


def test_user_model_with_explicit_config_and_tied_weights(tmp_path, registry):
    registry("test_tied_net", lambda *, num_classes, in_channels, image_size:
             TiedNet(num_classes, in_channels, image_size))
    body = TiedNet(4, 1, 8)
    model = NormalizedModel(Normalize([0.1], [0.9]), body).eval()  # built by hand: no config
    one_line_error(save_model, model, tmp_path / "x.safetensors", match="build_model")

    config = {"name": "test_tied_net", "num_classes": 4, "in_channels": 1, "image_size": 8,
              "mean": [0.1], "std": [0.9]}
    path = save_model(model, tmp_path / "tied.safetensors", config=config)
    loaded = load_model(path, device="cpu")
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert loaded.robustfair_config == {**config, "kwargs": {}}

    wrong = {**config, "num_classes": 5}
    text = one_line_error(save_model, model, tmp_path / "w.safetensors", config=wrong,
                          match="wrong shape for 1.embed.weight")
    assert "[4, 64] in the weights, [5, 64] in the model" in text
    one_line_error(save_model, model, tmp_path / "w.safetensors", config={"num_classes": 4},
                   match="needs 'name'")
    one_line_error(save_model, model, tmp_path / "w.safetensors",
                   config={**config, "depth": 3}, match="unknown key(s) depth")


def test_model_changed_after_build_is_refused_at_save(tmp_path):
    model = build_model("small_cnn", num_classes=10, in_channels=1, image_size=8)
    save_model(model, tmp_path / "before.safetensors")  # the config's shapes are remembered now
    model.body.classifier[2] = nn.Linear(128, 3)  # a new head, config still says 10 classes
    one_line_error(save_model, model, tmp_path / "m.safetensors",
                   match="wrong shape for 1.classifier.2.weight")
    assert not (tmp_path / "m.safetensors").exists()


def test_plain_module_without_config_explains_what_to_do(tmp_path):
    text = one_line_error(save_model, nn.Linear(3, 2), tmp_path / "m.safetensors",
                          match="no robustfair_config")
    assert "build_model" in text and "config=" in text


@pytest.mark.parametrize("metadata,needle", [
    ({"acc": float("nan")}, "JSON"),
    ({"x": torch.zeros(1)}, "JSON"),
    (["not", "a", "dict"], "must be a dict"),
])
def test_bad_metadata(tmp_path, metadata, needle):
    model = build_model("mlp", num_classes=3, in_channels=1, image_size=8, hidden=[8])
    one_line_error(save_model, model, tmp_path / "m.safetensors", metadata=metadata, match=needle)
    assert os.listdir(tmp_path) == []


def test_failed_write_keeps_the_old_checkpoint_and_leaves_no_temp_file(tmp_path, monkeypatch):
    from robustfair.models import checkpoint

    model = build_model("mlp", num_classes=3, in_channels=1, image_size=8, hidden=[8])
    path = save_model(model, tmp_path / "m.safetensors", metadata={"version": "old"})
    before = path.read_bytes()

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_file", crash)
    one_line_error(save_model, model, path, metadata={"version": "new"}, match="No space left")
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.safetensors"]


def test_checkpoint_gets_ordinary_file_permissions(tmp_path):
    reference = tmp_path / "plain.txt"
    reference.write_bytes(b"")  # what the user's umask gives any new file
    path = save_model(build_model("lenet", num_classes=10), tmp_path / "m.safetensors")
    assert path.stat().st_mode & 0o777 == reference.stat().st_mode & 0o777


def test_overwriting_replaces_the_file(tmp_path):
    a = build_model("mlp", num_classes=3, in_channels=1, image_size=8, hidden=[8])
    b = build_model("mlp", num_classes=3, in_channels=1, image_size=8, hidden=[8])
    path = save_model(a, tmp_path / "m.safetensors")
    save_model(b, path)
    assert torch.equal(load_model(path, device="cpu")[1].classifier.weight, b[1].classifier.weight)


# ----------------------------------------------------------------------------- bad files


@pytest.fixture
def good_file(tmp_path):
    model = build_model("small_cnn", num_classes=10, in_channels=1, image_size=8, width=4)
    return save_model(model, tmp_path / "good.safetensors", metadata=DIGIT_META)


def rewrite_header(src, dst, edit):
    """Re-save the same tensors with an edited robustfair header (what a tamperer could do)."""
    info = read_checkpoint_metadata(src)
    edit(info)
    save_file(load_file(str(src)), str(dst), metadata={"robustfair": json.dumps(info)})
    return dst


def test_missing_file_and_directory(tmp_path):
    one_line_error(load_model, tmp_path / "nope.safetensors", match="checkpoint not found")
    one_line_error(load_model, tmp_path, match="is a directory")
    lenet = build_model("lenet", num_classes=10)
    one_line_error(save_model, lenet, tmp_path, match="is a directory")


@pytest.mark.parametrize("damage", ["random", "empty", "truncated", "cut_in_header", "header_json"])
def test_damaged_files(tmp_path, good_file, damage):
    data = good_file.read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    bad = {
        "random": bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).tolist()),
        "empty": b"",
        "truncated": data[:-100],
        "cut_in_header": data[: 8 + header_len // 2],
        "header_json": data[:8] + b"#" + data[9:],
    }[damage]
    path = tmp_path / "bad.safetensors"
    path.write_bytes(bad)
    one_line_error(load_model, path, match="not a readable safetensors file")
    one_line_error(read_checkpoint_metadata, path, match="not a readable safetensors file")


def test_flipped_weight_byte_fails_the_checksum(tmp_path, good_file):
    data = bytearray(good_file.read_bytes())
    data[-10] ^= 0xFF  # inside the last tensor's bytes; the header still parses
    path = tmp_path / "flipped.safetensors"
    path.write_bytes(bytes(data))
    read_checkpoint_metadata(path)  # header intact
    one_line_error(load_model, path, match="do not match their checksum")


def test_foreign_safetensors_file(tmp_path):
    path = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, str(path))
    text = one_line_error(load_model, path, match="was not saved by robustfair")
    assert "register_model" in text and "save_model" in text


class _Payload:
    """Unpickling this calls os.mkdir(marker): proof that a pickle ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.parametrize("kind", ["raw_pickle", "torch_save"])
def test_a_pickle_is_never_executed(tmp_path, kind):
    # the payload is live: unpickling it does run code
    pickle.loads(pickle.dumps(_Payload(tmp_path / "proof")))
    assert (tmp_path / "proof").is_dir()

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.safetensors"
    if kind == "raw_pickle":
        path.write_bytes(pickle.dumps(_Payload(marker)))
    else:
        torch.save({"state_dict": _Payload(marker)}, path)
    one_line_error(load_model, path, match="not a readable safetensors file")
    one_line_error(read_checkpoint_metadata, path, match="not a readable safetensors file")
    assert not marker.exists()


def test_unknown_architecture_in_header(tmp_path, good_file):
    def edit(info):
        info["config"]["name"] = "resnet9000"

    path = rewrite_header(good_file, tmp_path / "x.safetensors", edit)
    one_line_error(load_model, path, match="model 'resnet9000' is not registered")


def test_weights_that_do_not_fit_the_config(tmp_path, good_file):
    def wider(info):
        info["config"]["kwargs"]["width"] = 8

    text = one_line_error(load_model, rewrite_header(good_file, tmp_path / "w.safetensors", wider),
                          match="wrong shape for 1.features.0.weight")
    assert "[4, 1, 3, 3] in the weights, [8, 1, 3, 3] in the model" in text

    def other_architecture(info):
        info["config"]["name"] = "lenet"
        info["config"]["kwargs"] = {}

    text = one_line_error(load_model,
                          rewrite_header(good_file, tmp_path / "l.safetensors", other_architecture),
                          match="missing 4 key(s): 1.features.0.bias")  # LeNet's convs have biases
    assert "unexpected 22 key(s): 1.features.1." in text and "num_batches_tracked" in text  # small_cnn's BN


@pytest.mark.parametrize("edit,needle", [
    (lambda i: i.update(format=99), "format 99, newer"),
    (lambda i: i.pop("config"), "must be a dict"),
    (lambda i: i["config"].update(num_classes="ten"), "'num_classes' must be an integer"),
    (lambda i: i["config"].update(mean="grey"), "'mean' must be a list of numbers"),
    (lambda i: i["config"]["kwargs"].update(depth=3), "has no option"),
    (lambda i: i.update(metadata=[1, 2]), "malformed"),
])
def test_malformed_headers(tmp_path, good_file, edit, needle):
    one_line_error(load_model, rewrite_header(good_file, tmp_path / "h.safetensors", edit),
                   match=needle)


def test_robustfair_entry_that_is_not_json(tmp_path, good_file):
    path = tmp_path / "j.safetensors"
    save_file(load_file(str(good_file)), str(path), metadata={"robustfair": "{'config': oops"})
    one_line_error(load_model, path, match="header is not JSON")


def _lying_checkpoint(path, hidden):
    """A few hundred bytes: a tiny MLP's weights under a header whose config is a huge MLP."""
    tiny = build_model("mlp", num_classes=10, in_channels=1, image_size=8, hidden=[2])
    header = json.loads(__import__("safetensors").safe_open(
        str(save_model(tiny, path)), framework="pt").metadata()["robustfair"])
    header["config"]["kwargs"] = {"hidden": hidden}
    tensors = {k: v.contiguous() for k, v in tiny.state_dict().items()}
    save_file(tensors, str(path), metadata={"robustfair": json.dumps(header)})
    return path


def test_a_small_checkpoint_describing_a_huge_model_costs_nothing(tmp_path):
    big = _lying_checkpoint(tmp_path / "big.safetensors", [30000, 30000])      # ~3.6 GB
    huge = _lying_checkpoint(tmp_path / "huge.safetensors", [1000000, 1000000])  # ~4 TB
    assert big.stat().st_size < 2000
    proc = run_limited("from robustfair.models import load_model\nfrom robustfair.cli import main\n"
                       "from robustfair.errors import ModelError\n", f"""
for path in ({str(big)!r}, {str(huge)!r}):
    try:
        load_model(path, device="cpu")
    except ModelError as exc:
        print("refused:", exc)
print(main(["audit", "--checkpoint", {str(big)!r}, "--dataset", "digits",
            "--out", {str(tmp_path / "o")!r}]))
""", headroom_mb=512)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("refused:") and "do not match the 'mlp' model" in lines[0]
    assert lines[1].startswith("refused:") and "more than this machine's" in lines[1]
    assert lines[2] == "2" and not (tmp_path / "o").exists()
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 1 and "do not match the 'mlp' model" in errors[0], proc.stderr
