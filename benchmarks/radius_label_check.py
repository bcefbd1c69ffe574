"""Has a per-class training radius become the label? (docs/MITIGATIONS.md, "A per-class radius
can become the label".)

Trains, with the mnist5k recipe of ``mitigation_comparison.py`` (one seed), plain PGD-AT and the
given mitigations, then for each final model prints, per class: the training radius the
mitigation ended with (``class_eps`` after the last epoch), the clean accuracy on the test
split, and the share of *all* test images predicted as that class once random-sign noise of
each size is added (every pixel ``±s``, no gradient, clipped to [0, 1]). A class the model reads
from the perturbation's size shows as a class with low clean accuracy that takes most
predictions under noise at its own (enlarged) radius.

Usage::

    python benchmarks/radius_label_check.py --mitigation trix --seed 0
    python benchmarks/radius_label_check.py --mitigation trix:radius=0 --noise 0.2,0.25
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def noisy_shares(model, x: torch.Tensor, size: float, seed: int) -> torch.Tensor:
    """Fraction of the images predicted as each class under random-sign noise of ``size``."""
    g = torch.Generator().manual_seed(seed)
    sign = torch.randint(0, 2, x.shape, generator=g).float() * 2 - 1
    with torch.no_grad():
        pred = model((x + size * sign).clamp(0, 1)).argmax(1)
    return torch.bincount(pred, minlength=model_classes(model)).float() / len(x)


def model_classes(model) -> int:
    return len(model.robustfair_metadata["classes"])


def main(argv: list[str] | None = None) -> int:
    from mitigation_comparison import RECIPE, DATASET_OPTIONS  # the comparison's recipe

    import robustfair as rf
    from robustfair.cli.train import parse_mitigation
    from robustfair.data import to_float
    from robustfair.training import TrainConfig, train

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mitigation", action="append", default=[], metavar="NAME[:K=V,...]")
    p.add_argument("--objective", default="pgd_at")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise", default="0.2,0.25", help="noise sizes, comma-separated")
    p.add_argument("--runs", default=str(ROOT / "runs" / "radius_label_check"))
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = [float(s) for s in args.noise.split(",")]
    ds = rf.load_dataset(RECIPE["dataset"], **DATASET_OPTIONS)
    x, y = to_float(ds.test.x), ds.test.y

    variants = [("pgd_at", [])] + [(m.replace(":", "_").replace(",", "_").replace("=", "-"),
                                    [parse_mitigation(m)]) for m in args.mitigation]
    for name, mitigations in variants:
        cfg = TrainConfig(**RECIPE, objective=args.objective, mitigations=mitigations,
                          seed=args.seed)
        result = train(cfg, Path(args.runs) / name / f"seed{args.seed}", progress=False)
        model = result.model.cpu().eval()
        with torch.no_grad():
            pred = model(x).argmax(1)
        eps = final_class_eps(Path(args.runs) / name / f"seed{args.seed}", ds.classes)
        print(f"\n{name} (seed {args.seed}, {args.objective}, test split, {len(x)} points)")
        header = "class  train_eps  clean_acc  " + "  ".join(f"share@{s:g}" for s in sizes)
        print(header)
        shares = [noisy_shares(model, x, s, args.seed) for s in sizes]
        for c, cname in enumerate(ds.classes):
            acc = float((pred[y == c] == c).float().mean())
            e = "     -   " if eps is None else f"{eps[c]:9.3f}"
            row = "  ".join(f"{float(sh[c]):9.1%}" for sh in shares)
            print(f"{cname:>5}  {e}  {acc:9.1%}  {row}")
    return 0


def final_class_eps(run_dir: Path, classes: list[str]) -> list[float] | None:
    """The per-class training radius the run's mitigations set after its last epoch."""
    from robustfair.training import checkpoint as ckpt
    from robustfair.training.mitigations import (MitigationContext, MitigationStack,
                                                 build_mitigation)

    manifest = ckpt.read_manifest(run_dir)
    cfg = manifest["config"]
    stack = MitigationStack([build_mitigation(m["name"], **{k: v for k, v in m.items()
                                                           if k != "name"})
                             for m in cfg.get("mitigations") or []])
    if not stack:
        return None
    stack.setup(MitigationContext(num_classes=len(classes), classes=list(classes),
                                  eps=cfg["eps"], objective=cfg["objective"],
                                  epochs=cfg["epochs"], seed=cfg["seed"]))
    tensors = ckpt.load_tensors(run_dir / "state.safetensors")
    stack.load_state_dict(ckpt.join_tensors(manifest.get("mitigations", {}), tensors))
    eps = stack.class_eps()
    return None if eps is None else eps.tolist()


if __name__ == "__main__":
    sys.exit(main())
