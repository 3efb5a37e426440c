"""`soopervisor validate` vs `python -c pass`, interleaved, medians (target ratio <= 3)."""
from __future__ import annotations

import sys

from _common import EXAMPLE, median, report, soopervisor, timed

N = int(sys.argv[1]) if len(sys.argv) > 1 else 20


def main() -> None:
    validate, baseline = [], []
    for _ in range(N):
        baseline.append(timed([sys.executable, "-c", "pass"]))
        validate.append(timed(soopervisor("validate", str(EXAMPLE)), ok_codes=(0, 2)))
    report(f"validate (median of {N})", median(validate), median(baseline), "<= 3")


if __name__ == "__main__":
    main()
