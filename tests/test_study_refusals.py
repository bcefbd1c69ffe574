"""What a study refuses, in one line and before it writes anything: YAML tags and a grid too big
to expand in its spec, a different spec in an existing study folder, an unreachable Ray cluster."""
from __future__ import annotations

import pytest

from robustfair.study.grid import expand
from robustfair.study.spec import parse_spec
from robustfair.study.store import StudyStore

from limited import assert_one_line_error, cli, run_limited

SPEC = "name: {name}\ngrid: {{seed: [{seeds}]}}\nfixed: {{dataset: digits, eps: 0.1}}\n"


# ---------------------------------------------------------------- the spec file
@pytest.mark.parametrize("value", ["!!python/name:os.system x", "!custom 3", "!!binary ~~~",
                                   "!!timestamp 2024-13-99", "!!python/object/apply:os.system [ls]"])
def test_spec_tags_are_one_line(tmp_path, capsys, value):
    spec = tmp_path / "s.yaml"
    spec.write_text(f"grid: {{seed: [0]}}\nfixed: {{dataset: digits}}\ndescription: {value}\n")
    code, err = cli(["study", "run", spec, "--out", tmp_path / "out", "--dry-run"], capsys)
    assert_one_line_error(code, err, "is not allowed")
    assert f"{spec}:3:" in err and not (tmp_path / "out").exists()


def test_unquoted_dates_stay_text():
    spec = parse_spec("grid: {seed: [0]}\nfixed: {dataset: digits, eps: 0.1}\n"
                      "description: 2024-01-01")
    assert spec.description == "2024-01-01"


def test_a_huge_grid_is_refused_before_it_is_expanded(tmp_path):
    values = ", ".join(str(i) for i in range(100))
    spec = tmp_path / "big.yaml"
    spec.write_text(f"grid: {{seed: [{values}], val_seed: [{values}], eval_steps: "
                    f"[{', '.join(str(i + 1) for i in range(100))}]}}\nfixed: {{dataset: digits}}\n")
    proc = run_limited("from robustfair.cli import main\nimport robustfair.study.grid\n", f"""
print(main(["study", "run", {str(spec)!r}, "--out", {str(tmp_path / "s")!r}, "--dry-run"]))
""", headroom_mb=512, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "2"
    assert "100x100x100 points, more than 10000 runs" in proc.stderr


# ---------------------------------------------------------------- the study folder
def test_a_different_spec_is_refused_in_an_existing_study_folder(tmp_path, capsys):
    root = tmp_path / "study"
    spec = parse_spec(SPEC.format(name="first", seeds="0, 1"))
    StudyStore(root).prepare(spec.text, spec.name, expand(spec))
    before = {p.name: p.read_bytes() for p in root.iterdir() if p.is_file()}
    other = tmp_path / "other.yaml"
    for text, why in ((SPEC.format(name="first", seeds="5"), "2 of its 2 runs are not in this spec"),
                      (SPEC.format(name="second", seeds="0, 1"), "this spec is named 'second'")):
        other.write_text(text)
        code, err = cli(["study", "run", other, "--out", root, "--no-progress"], capsys)
        assert_one_line_error(code, err, why)
        assert {p.name: p.read_bytes() for p in root.iterdir() if p.is_file()} == before
    # the same study with more runs orphans nothing: allowed
    more = parse_spec(SPEC.format(name="first", seeds="0, 1, 2"))
    StudyStore(root).prepare(more.text, more.name, expand(more))
    assert len(StudyStore(root).read_index()["runs"]) == 3


# ---------------------------------------------------------------- the executor
def test_an_unreachable_ray_address_fails_at_once(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC.format(name="ray", seeds="0"))
    proc = run_limited("from robustfair.cli import main\n", f"""
print(main(["study", "run", {str(spec)!r}, "--out", {str(tmp_path / "out")!r},
            "--executor", "ray", "--address", "127.0.0.1:1", "--no-progress"]))
""", headroom_mb=4096, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "2"
    assert proc.stderr.strip().startswith("robustfair: error: cannot reach Ray at 127.0.0.1:1")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
