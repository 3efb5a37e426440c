"""setup.py's python_requires matches what the code needs and what is tested."""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def setup_keywords() -> dict:
    tree = ast.parse((REPO / "setup.py").read_text(encoding="utf-8"))
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    return {k.arg: k.value for k in call.keywords if k.arg}


def test_python_requires_is_the_oldest_python_the_code_runs_on():
    kw = setup_keywords()
    requires = ast.literal_eval(kw["python_requires"])
    assert requires == ">=3.11"
    # datetime.UTC is new in 3.11: the floor is real
    uses_utc = [p for p in (REPO / "soopervisor").rglob("*.py")
                if re.search(r"from datetime import .*\bUTC\b", p.read_text(encoding="utf-8"))]
    assert uses_utc
    assert sys.version_info >= (3, 11)  # what the tests run on


def test_classifiers_name_the_tested_version_and_none_older():
    classifiers = ast.literal_eval(setup_keywords()["classifiers"])
    versions = [c.rsplit(" ", 1)[1] for c in classifiers if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)]
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in versions  # the one running the tests
    assert all(tuple(map(int, v.split("."))) >= (3, 11) for v in versions)
