"""Six runs that each sleep 10 s: a three-node swarm that takes them all at once (the scheduler spreads
them over the nodes) vs one node with one slot (one after another). Target ratio <= 0.45.

Each run is a whole Swarm run of the executor: exchange, secrets, service, logs, artifacts upload.
Starts its own swarm and registry (benchmarks/_swarm.py); needs scripts/setup.
"""
from __future__ import annotations

import io
import tarfile
import threading
import time

from _common import report
from _swarm import base_image, bench_swarm, pull_everywhere

RUNS = 6
SCRIPT = b"mkdir -p /soopervisor/artifacts; sleep 10; echo done > /soopervisor/artifacts/out.txt\n"


def spec(image: str, run_id: str):
    from soopervisor.executors import ContainerSpec

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        info = tarfile.TarInfo("soopervisor/run.sh")
        info.size, info.mode = len(SCRIPT), 0o755
        t.addfile(info, io.BytesIO(SCRIPT))
    return ContainerSpec(image=image, command=["bash", "/soopervisor/run.sh"], archives=[buf.getvalue()],
                         labels={"soopervisor.run": run_id})


def one(engine, image: str, run_id: str, nodes: list[str]) -> None:
    from soopervisor.executors import for_engine

    ex = for_engine(engine)
    result = ex.execute(spec(image, run_id), lambda b: None, collect_to=lambda s: [None for _ in s])
    if result.exit_code != 0 or not result.collected:
        raise SystemExit(f"run {run_id} failed: {result}")
    nodes.append(ex.node)


def main() -> None:
    from soopervisor.engines import Engine

    image = base_image()
    swarm = bench_swarm()
    try:
        pull_everywhere(swarm, image)
        entry = swarm.entry()
        spread_engine = Engine(name="bench", type="swarm", host=entry["host"], registry=entry["registry"],
                               exchange_address="127.0.0.1", network="host", slots=RUNS)
        manager_id = swarm.node_ids()["m"]
        single_engine = Engine(name="bench-1", type="swarm", host=entry["host"], registry=entry["registry"],
                               exchange_address="127.0.0.1", network="host", slots=1,
                               constraints=(f"node.id=={manager_id}",))
        one(spread_engine, image, "warm-up", [])  # the image's first push to the registry
        start = time.perf_counter()
        nodes: list[str] = []
        threads = [threading.Thread(target=one, args=(spread_engine, image, f"spread-{i}", nodes))
                   for i in range(RUNS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        spread = time.perf_counter() - start
        start = time.perf_counter()
        for i in range(RUNS):
            one(single_engine, image, f"single-{i}", [])
        single = time.perf_counter() - start
        per_node = {n: nodes.count(n) for n in set(nodes)}
        print(f"runs per node on the swarm: {sorted(per_node.values(), reverse=True)}")
        report(f"{RUNS} runs of 10 s, 3-node swarm", spread, single, "<= 0.45")
    finally:
        swarm.stop()


if __name__ == "__main__":
    main()
