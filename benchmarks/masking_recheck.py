"""The masking flag, AutoAttack's way, on real models: how many points Square alone broke (N),
how many of those gradient attacks with more restarts then broke (M: an attack-budget miss),
and how many resisted every gradient attack (K: possible gradient masking).

Each model is audited with AutoAttack's standard version (or its stored audit is read), then
:func:`robustfair.sanity.masking_recheck` re-attacks the points Square alone broke with APGD-CE
and APGD-DLR (5 restarts each) and APGD-T on every other class. Models:

- ``--checkpoint PATH`` (repeatable): a ``model.safetensors`` from ``robustfair train``, with
  ``--dataset`` (``digits``; ``mnist5k`` with ``--image-size 14``); ``--report PATH`` next to a
  checkpoint reuses a stored AutoAttack audit of it instead of auditing again;
- ``--quantised``: each checkpoint wrapped to round its input to 5 grey levels instead (every
  input gradient exactly zero: gradient masking by construction).

Usage::

    python benchmarks/masking_recheck.py --dataset digits --eps 0.2 \\
        --checkpoint runs/demo-seed2/model.safetensors            # add --quantised to wrap it
"""
from __future__ import annotations

import argparse
import sys
import time

import torch
from torch import nn


class Quantised(nn.Module):
    """Rounds its input to 5 grey levels before the network: every input gradient is zero."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.round(x * 4) / 4)


def check(model: nn.Module, ds, eps: float, report_path: str | None, seed: int) -> dict:
    import robustfair as rf
    from robustfair.metrics import ClassReport
    from robustfair.sanity import _black_box_breaks, masking_recheck

    t0 = time.perf_counter()
    if report_path:
        report = ClassReport.from_json(report_path)
    else:
        report = rf.audit(model, ds.test.x, ds.test.y, classes=ds.classes, seed=seed,
                          attacks=[rf.build_attack("autoattack", eps=eps)], progress=False,
                          independent=False, sanity=False)
    flags, counts = masking_recheck(model, ds.test.x, ds.test.y, report)
    # N is counted whether or not it reaches the flag's threshold (>= 5 and > 0.2%); M and K
    # only exist when it does (below it nothing is re-attacked)
    return {"points": len(report.predictions),
            "robust": float(report.overall["robust_acc"]),
            "N": int(_black_box_breaks(report).sum()),
            "M": counts.get("gradient_recheck", "not re-attacked"),
            "K": counts.get("resisted", "-"), "flag": flags[0]["code"] if flags else "none",
            "message": flags[0]["message"] if flags else "", "seconds": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--eps", type=float, default=0.2)
    p.add_argument("--checkpoint", action="append", default=[])
    p.add_argument("--report", action="append", default=[],
                   help="a stored AutoAttack audit per checkpoint, in order ('-' for none)")
    p.add_argument("--quantised", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    import robustfair as rf

    options = {"image_size": args.image_size} if args.image_size else {}
    ds = rf.load_dataset(args.dataset, **options)
    reports = args.report + ["-"] * (len(args.checkpoint) - len(args.report))
    print("| model | points | robust % | Square alone (N) | gradient re-attack broke (M) | "
          "resisted (K) | flag | s |")
    print("|---|---|---|---|---|---|---|---|")
    for path, report in zip(args.checkpoint, reports):
        model = rf.load_model(path).eval()
        runs = ([(f"{path} (quantised input)", Quantised(model).eval(), None)] if args.quantised
                else [(path, model, None if report == "-" else report)])
        for name, net, stored in runs:
            r = check(net, ds, args.eps, stored, seed=0)
            print(f"| {name} | {r['points']} | {100 * r['robust']:.1f} | {r['N']} "
                  f"| {r['M']} | {r['K']} | {r['flag']} | {r['seconds']:.0f} |", flush=True)
            if r["message"]:
                print(f"<!-- {r['message']} -->", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
