"""An incremental run vs a forced run of the same commit (target ratio <= 0.3, issue 16).

A 10-task pipeline (each task about 1.5 s of real work: sha256 over a buffer),
committed and run once (this also warms the environment); commit 2 changes one
leaf task. Then, in the same environment, commit 2 runs incrementally (starting
from commit 1's set: one task to build) and forced (every task built).

Needs a running engine and a base image (scripts/setup).
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import isolated_home, report, soopervisor, timed

#: sha256 rounds over 1 MiB per task: about 1.5 s on the 2-core machines (0.35 s per 600 rounds)
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 2500
TASKS = 10

TASK = '''

def {name}(product{upstream_arg}):
    work({rounds}, "{salt}")
    Path(str(product)).parent.mkdir(parents=True, exist_ok=True)
    Path(str(product)).write_text("{name} {salt}")
'''


def tasks_py(leaf_salt: str) -> str:
    code = ("import hashlib\nfrom pathlib import Path\n\n\n"
            "def work(rounds, salt):\n"
            "    block = (salt * 1024).encode()[: 1 << 20].ljust(1 << 20, b'x')\n"
            "    h = hashlib.sha256()\n"
            "    for _ in range(rounds):\n"
            "        h.update(block)\n"
            "    return h.hexdigest()\n")
    for i in range(TASKS):
        leaf = i == TASKS - 1
        code += TASK.format(name=f"t{i}", upstream_arg=", upstream" if i else "", rounds=ROUNDS,
                            salt=leaf_salt if leaf else "same")
    return code


def pipeline_yaml() -> str:
    # t0 feeds t1..t8; t9 (the leaf commit 2 changes) hangs off t8
    lines = ["meta:", "  extract_upstream: false", "tasks:"]
    for i in range(TASKS):
        lines += [f"  - source: tasks.t{i}", f"    product: output/t{i}.txt"]
        if i:
            lines.append(f"    upstream: [{'t8' if i == TASKS - 1 else 't0'}]")
    return "\n".join(lines) + "\n"


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=b@b", "-c", "user.name=bench", *args], cwd=root, check=True)


def newest_run(env: dict) -> dict:
    runs = json.loads(subprocess.run(soopervisor("runs", "--json"), env=env, capture_output=True, text=True,
                                     check=True).stdout)
    return runs[0]


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="soopervisor-bench-")) / "incremental"
    root.mkdir()
    (root / "pipeline.yaml").write_text(pipeline_yaml())
    (root / "env.yaml").write_text("sample: false\n")
    (root / "requirements.txt").write_text("# the pipeline needs only ploomber\n")
    (root / "tasks.py").write_text(tasks_py("one"))
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "commit 1")
    env = isolated_home()
    first = timed(soopervisor("run", str(root), "-q"), env=env)  # also builds (or finds) the environment

    (root / "tasks.py").write_text(tasks_py("two"))  # one leaf task changes
    git(root, "commit", "-q", "-am", "commit 2: change the leaf task")
    incremental = timed(soopervisor("run", str(root), "-q"), env=env)
    inc = newest_run(env)
    forced = timed(soopervisor("run", str(root), "-q", "--force"), env=env)
    full = newest_run(env)
    print(f"commit 1 (forced, environment warm or built): {first:.3f}s")
    print(f"incremental run of commit 2: {inc['tasks_up_to_date']} tasks up to date, {inc['tasks_total']} built")
    print(f"forced run of commit 2: {full['tasks_up_to_date']} tasks up to date, {full['tasks_total']} built")
    report("incremental vs forced run of one commit", incremental, forced, "<= 0.3")


if __name__ == "__main__":
    main()
