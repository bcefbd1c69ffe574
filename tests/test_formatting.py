"""One formatting module (robustfair._formatting): numbers read the same on every page, and the
pages use it instead of copies of their own."""
import math
import re
from pathlib import Path

import numpy as np
import pytest

from robustfair import _formatting as F
from robustfair.metrics import format_p

SRC = Path(__file__).resolve().parents[1] / "src" / "robustfair"


@pytest.mark.parametrize("missing", [None, math.nan, math.inf, np.float64("nan"), "x"])
def test_a_missing_value_is_written_as_missing_by_every_formatter(missing):
    assert F.percent(missing) == F.points(missing) == F.signed(missing) == "n/a"
    assert F.number(missing) == F.estimate(missing, 0.1, 0.2) == format_p(missing) == "n/a"
    assert F.interval(missing, 0.5) == "" and F.interval(0.5, missing, missing=None) is None
    assert F.percent(missing, missing="–") == "–"


def test_numbers_as_the_report_card_study_and_leaderboard_print_them():
    assert F.percent(np.float32(0.5)) == "50.0" and F.percent(0.5, digits=0, unit="%") == "50%"
    assert F.percent(0.8123, sd=0.0131, unit="%") == "81.2 ± 1.3%"
    assert F.points(-0.0612) == "-6.1 points" and F.signed(0.25, scale=1, digits=3) == "+0.250"
    assert F.interval(0.014, 0.11, sign=True) == "[+1.4, +11.0]"
    assert F.estimate(0.873, 0.82, 0.911) == "87.3 [82.0, 91.1]"
    assert F.estimate(0.873, math.nan, 0.9) == "87.3"
    assert format_p(0.0009) == "< 0.001" and format_p(0.0009, p_min=0.0008) == (
        "0.0009 (smallest attainable 0.0008)") and format_p(0.123) == "0.12"


def test_the_pages_have_no_formatting_copies_of_their_own():
    pages = [SRC / "metrics" / "_format.py", SRC / "card" / "content.py",
             SRC / "study" / "summary.py", SRC / "explain" / "report.py",
             SRC / "leaderboard" / "report.py", SRC / "leaderboard" / "run.py"]
    percent_fstring = re.compile(r"\{100 ?\* ?[^}]*:\.[0-9]f\}")
    for page in pages:
        text = page.read_text()
        assert "def format_p" not in text and "def format_setting" not in text, page
        hits = [line for line in text.splitlines() if percent_fstring.search(line)
                and "deficit" not in line]   # the deficit is a setting (10 points), not a result
        assert not hits, (page, hits)
    defined = [p for p in SRC.rglob("*.py") if "def format_p(" in p.read_text()]
    assert defined == [SRC / "_formatting.py"]
