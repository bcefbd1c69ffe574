"""``robustfair.training.train`` end to end on the real digits data, with small models and few
steps: the class-wise log against a direct evaluation, the run directory's files and rules,
every mitigation hook reaching the loop, the class-weight mitigation's effect, the fast-AT
guard, and the CLI's one-line errors."""
import copy
import json

import pandas as pd
import pytest
import torch

from robustfair.attacks import build_attack
from robustfair.cli import main as cli_main
from robustfair.data import load_dataset, to_float
from robustfair.errors import ConfigError
from robustfair.models import build_model, load_model, save_model
from robustfair.training import TrainConfig, train
from robustfair.training import checkpoint as ckpt
from robustfair.training.evaluate import stratified_holdout
from robustfair.training.mitigations import Mitigation, register_mitigation


SMALL = {"dataset": "digits", "model": "small_cnn", "model_kwargs": {"width": 8, "hidden": 32},
         "batch_size": 128, "steps": 2, "eval_steps": 3, "eps": 0.1, "optimizer": "adam",
         "lr": 0.01, "weight_decay": 0.0, "epochs": 2, "device": "cpu"}


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def small(**changes) -> TrainConfig:
    return TrainConfig.from_dict({**SMALL, **changes})


def _val_split(cfg: TrainConfig):
    ds = load_dataset("digits")
    _, val = stratified_holdout(ds.train.y, cfg.val_fraction, cfg.val_max, cfg.val_seed, 10,
                                cfg.val_min_per_class)
    return ds.train.x[val], ds.train.y[val]


# ------------------------------------------------------------------ log, files, run-dir rules
def test_pgd_at_run_logs_what_a_direct_evaluation_finds_and_obeys_run_dir_rules(tmp_path):
    cfg = small(objective="pgd_at")
    out = tmp_path / "run"
    result = train(cfg, out, progress=False)

    log = pd.read_csv(out / "epochs.csv", dtype={"class": str, "worst_class": str})
    assert len(log) == 2 * 11 and list(log["epoch"].unique()) == [1, 2]
    classes = log[(log.scope == "class") & (log.epoch == 2)]
    epoch = log[(log.scope == "epoch") & (log.epoch == 2)].iloc[0]
    # the epoch's averages are the per-class counts pooled
    assert epoch["robust_acc"] == pytest.approx((classes.robust_acc * classes.n).sum() / classes.n.sum())
    assert epoch["worst_class"] == classes.loc[classes.robust_acc.idxmin(), "class"]
    assert epoch["worst_class_robust_acc"] == pytest.approx(classes.robust_acc.min())

    # recompute epoch 2's per-class numbers from the saved model on the validation split
    x, y = _val_split(cfg)
    model = load_model(out / "model.safetensors", device="cpu")
    xf = to_float(x)
    with torch.no_grad():
        clean = model(xf).argmax(1) == y
    attack = build_attack("pgd", eps=0.1, steps=3, alpha=cfg.eval_alpha(), seed=cfg.val_seed)
    robust = clean & (attack.perturb(model, xf, y).pred == y)
    for k in range(10):
        row = classes[classes["class"] == str(k)].iloc[0]
        assert row["n"] == int((y == k).sum())
        assert row["clean_acc"] == pytest.approx(float(clean[y == k].float().mean()))
        assert row["robust_acc"] == pytest.approx(float(robust[y == k].float().mean()))

    meta = model.robustfair_metadata
    assert meta["dataset"] == "digits" and meta["classes"] == [str(i) for i in range(10)]
    assert meta["training"]["objective"] == "pgd_at" and meta["keep"] == "last"
    assert _same_weights(model, result.model)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["keep"] == "last" and summary["chosen_epoch"] == 2 and summary["stopped"] is None
    assert json.loads((out / "config.json").read_text())["config"]["keep"] == "last"

    # a finished run reports itself; another config is refused by name; --force starts over
    again = train(cfg.replace(device=None), out, progress=False)
    assert again.already_complete and again.epochs_run == 2
    with pytest.raises(ConfigError, match=r"differs in: epochs, lr\)"):
        train(cfg.replace(lr=0.02, epochs=1), out, progress=False)
    fresh = train(cfg.replace(epochs=1, objective="standard"), out, force=True, progress=False)
    assert not fresh.already_complete and fresh.epochs_run == 1
    assert len(pd.read_csv(out / "epochs.csv")) == 11


# ------------------------------------------------------------------ mitigation hooks in the loop
CRASH = {"epoch": None}


@register_mitigation("_test_probe")
class Probe(Mitigation):
    """Records what the trainer hands to each hook; can crash the run after an epoch."""

    built: list = []  # every instance, newest last, so a test can inspect the run's probe

    def __init__(self, zero_eps=False, only_class=None, freeze_eval=False):
        Probe.built.append(self)
        self.zero_eps, self.only_class, self.freeze_eval = zero_eps, only_class, freeze_eval
        self.steps, self.stats, self.labels_seen = 0, [], set()
        self.counter = None

    def setup(self, ctx):
        super().setup(ctx)
        self.counter = torch.zeros(1)
        self.frozen = None

    def class_eps(self):
        return torch.zeros(self.ctx.num_classes) if self.zero_eps else None

    def sample_weights(self):
        if self.only_class is None:
            return None
        w = torch.zeros(self.ctx.num_classes)
        w[self.only_class] = 1.0
        return w

    def loss(self, logits, y, per_sample_loss, **ctx):
        self.labels_seen |= set(y.tolist())
        return per_sample_loss

    def after_step(self, model):
        self.steps += 1
        self.counter += 1
        if self.freeze_eval and self.frozen is None:
            self.frozen = copy.deepcopy(model).eval()

    def eval_model(self):
        return self.frozen

    def end_epoch(self, stats):
        self.stats.append(stats)
        if CRASH["epoch"] == stats.epoch:
            raise RuntimeError("simulated crash")

    def state_dict(self):
        return {"counter": self.counter, "steps": self.steps}

    def load_state_dict(self, state):
        self.counter = state["counter"].clone()
        self.steps = state["steps"]


@pytest.fixture
def probes():
    Probe.built.clear()
    yield Probe.built
    Probe.built.clear()


def test_zero_class_eps_makes_pgd_at_train_exactly_like_standard(tmp_path, probes):
    base = dict(epochs=1, augment=False)
    std = train(small(objective="standard", mitigations=["_test_probe"], **base),
                tmp_path / "std", progress=False)
    adv = train(small(objective="pgd_at", mitigations=[{"name": "_test_probe", "zero_eps": True}],
                      **base), tmp_path / "adv", progress=False)
    assert _same_weights(std.model, adv.model)
    probe = probes[0]  # the standard run's
    steps = json.loads((tmp_path / "std" / "config.json").read_text())["resolved"]["steps_per_epoch"]
    assert probe.steps == steps
    assert int(probe.ctx.class_counts.sum()) == len(load_dataset("digits").train) - int(
        probe.stats[0].counts.sum())
    rows = std.class_log
    assert probe.stats[0].robust_acc.tolist() == pytest.approx(rows.robust_acc.tolist())
    assert probe.stats[0].boundary_error.tolist() == pytest.approx(
        (rows.clean_acc - rows.robust_acc).tolist(), abs=1e-6)
    assert probe.labels_seen == set(range(10))


def test_sample_weights_and_eval_model_hooks_steer_the_loop(tmp_path, probes):
    result = train(small(objective="standard", epochs=1, mitigations=[
        {"name": "_test_probe", "only_class": 4, "freeze_eval": True}]), tmp_path, progress=False)
    probe = probes[-1]
    assert probe.labels_seen == {4}  # re-sampling drew class 4 only
    # the evaluated and saved model is the mitigation's, not the trained one
    assert _same_weights(result.model, probe.frozen)


def test_resume_restores_mitigation_state_and_refuses_foreign_checkpoints(tmp_path, monkeypatch,
                                                                         probes):
    cfg = small(objective="standard", epochs=2, mitigations=["_test_probe"])
    out = tmp_path / "run"
    monkeypatch.setitem(CRASH, "epoch", 2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg, out, progress=False)
    manifest = ckpt.read_manifest(out)
    assert manifest["epoch"] == 1 and not manifest["complete"]

    # a checkpoint of another architecture in its place: one line naming both
    good = (out / "checkpoint.safetensors").read_bytes()
    other = build_model("mlp", num_classes=10, in_channels=1, image_size=8)
    save_model(other, out / "checkpoint.safetensors")
    manifest["files"]["checkpoint.safetensors"] = ckpt.file_sha256(out / "checkpoint.safetensors")
    (out / "state.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="holds a 'mlp' model .* trains 'small_cnn'"):
        train(cfg, out, progress=False)
    (out / "checkpoint.safetensors").write_bytes(good)
    manifest["files"]["checkpoint.safetensors"] = ckpt.file_sha256(out / "checkpoint.safetensors")
    (out / "state.json").write_text(json.dumps(manifest))

    monkeypatch.setitem(CRASH, "epoch", None)
    done = train(cfg, out, progress=False)
    steps = manifest["global_step"]
    assert done.epochs_run == 2 and probes[-1].steps == 2 * steps
    assert int(probes[-1].counter) == 2 * steps  # the tensor state came back from safetensors
    assert list(done.epoch_log.epoch) == [1, 2]


# ------------------------------------------------------------------ class weights, fast-AT guard
def test_class_weight_fifty_on_class_3_makes_the_model_predict_3_more(tmp_path):
    ds = load_dataset("digits")
    x, y = to_float(ds.test.x), ds.test.y
    share = []
    for weights in (None, {"3": 50}):
        mit = [{"name": "class_weight", "weights": weights}] if weights else []
        r = train(small(objective="standard", epochs=2, mitigations=mit),
                  tmp_path / str(bool(weights)), progress=False)
        with torch.no_grad():
            pred = r.model(x).argmax(1)
        share.append((float((pred == 3).float().mean()), float((pred[y == 3] == 3).float().mean())))
    (plain_share, plain_recall), (weighted_share, weighted_recall) = share
    assert weighted_share > plain_share + 0.05 and weighted_recall >= plain_recall


@register_mitigation("_test_sabotage")
class Sabotage(Mitigation):
    """Zeroes the weights during epoch 2: validation accuracy collapses to one class's share."""

    def __init__(self):
        self.epochs_done = 0

    def end_epoch(self, stats):
        self.epochs_done += 1

    def after_step(self, model):
        if self.epochs_done >= 1:
            with torch.no_grad():
                for p in model.parameters():
                    p.zero_()


def test_fgsm_rs_guard_stops_on_collapse_and_keeps_the_previous_epoch(tmp_path):
    cfg = small(objective="fgsm_rs", eps=0.05, epochs=3, batch_size=32,
                mitigations=["_test_sabotage"])
    result = train(cfg, tmp_path, progress=False)
    assert result.stopped.startswith("catastrophic overfitting at epoch 2")
    assert result.chosen_epoch == 1 and result.epochs_run == 2
    epochs = result.epoch_log
    assert epochs.loc[0, "robust_acc"] - epochs.loc[1, "robust_acc"] > cfg.co_drop
    assert epochs.loc[1, "note"].startswith("catastrophic overfitting")
    kept = load_model(tmp_path / "checkpoint.safetensors", device="cpu")
    assert kept.robustfair_metadata["epoch"] == 1
    assert _same_weights(kept, result.model)
    assert json.loads((tmp_path / "summary.json").read_text())["stopped"] == result.stopped
    assert train(cfg, tmp_path, progress=False).already_complete


# ------------------------------------------------------------------ CLI errors
@pytest.mark.parametrize("argv, fragment", [
    (["--objective", "pgdx"], "unknown objective 'pgdx'"),
    (["--eps", "8/0"], "is not a number"),
    (["--lr", "fast"], "is not a number"),
    (["--mitigation", "nope"], "unknown mitigation 'nope'"),
    (["--mitigation", "class_weight:bogus=1"], "has no option(s) bogus"),
    (["--class-weight", "3"], "must look like CLASS=WEIGHT"),
    (["--dataset", "nodata"], "unknown dataset 'nodata'"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, fragment):
    code = cli_main(["train", "--out", str(tmp_path / "o"), "--no-progress", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and fragment in err and "\n" not in err and err.startswith("robustfair: error:")


def test_cli_refuses_a_run_dir_with_another_config(tmp_path, capsys):
    cfg = small(objective="standard", epochs=1)
    train(cfg, tmp_path, progress=False)
    argv = ["train", "--out", str(tmp_path), "--no-progress", "--dataset", "digits",
            "--model", "small_cnn", "--model-arg", "width=8", "--model-arg", "hidden=32",
            "--objective", "standard", "--eps", "0.1", "--steps", "2", "--eval-steps", "3",
            "--optimizer", "adam", "--lr", "0.01", "--weight-decay", "0", "--batch-size", "128"]
    assert cli_main(argv + ["--epochs", "3"]) == 2
    assert "differs in: epochs" in capsys.readouterr().err
    assert cli_main(argv + ["--epochs", "1"]) == 0
    assert "already complete" in capsys.readouterr().out


# ------------------------------------------------------------------ what must show (small)
@pytest.mark.slow  # two six-epoch trainings
def test_pgd_at_makes_digits_robust_and_widens_the_class_spread(tmp_path):
    """A small version of the study's first finding, on the untouched test split."""
    ds = load_dataset("digits")
    x, y = to_float(ds.test.x), ds.test.y
    found = {}
    for objective in ("standard", "pgd_at"):
        cfg = small(objective=objective, eps=0.2, steps=3, eval_steps=2, epochs=6, batch_size=64,
                    schedule="onecycle", augment=False, model_kwargs={"width": 16, "hidden": 64})
        model = train(cfg, tmp_path / objective, progress=False).model
        with torch.no_grad():
            clean = model(x).argmax(1) == y
        robust = clean & (build_attack("pgd", eps=0.2, steps=10).perturb(model, x, y).pred == y)
        per_class = [(float(clean[y == k].float().mean()), float(robust[y == k].float().mean()))
                     for k in range(10)]
        found[objective] = (float(robust.float().mean()), torch.tensor(per_class).std(dim=0))
    assert found["standard"][0] < 0.1 and found["pgd_at"][0] > 0.4
    clean_std, robust_std = found["pgd_at"][1]
    assert robust_std > clean_std
