"""Which engine takes the next job: the most free slots first, ties in the configured order, held
engines skipped until they answer. The engines here are plain entries and the probe is the test's
(which engine answers is the test's choice); tests/server/test_serve_engines.py does the same with
two real dockerd."""
from __future__ import annotations

import threading

from soopervisor.engines import Engine
from soopervisor.server import pool as pool_mod
from soopervisor.server.pool import EnginePool


class Answers:
    """Which engines answer (name -> reason when not), and how often each was asked."""

    def __init__(self) -> None:
        self.down: dict[str, str] = {}
        self.asked: dict[str, int] = {}

    def __call__(self, engine: Engine) -> str | None:
        self.asked[engine.name] = self.asked.get(engine.name, 0) + 1
        return self.down.get(engine.name)


def test_the_most_free_slots_first_ties_in_order_and_a_full_pool_takes_nothing():
    answers = Answers()
    a, b, c = Engine("a", slots=2), Engine("b", slots=3), Engine("c", slots=1)
    pool = EnginePool([a, b, c], probe=answers)
    taken = [pool.acquire() for _ in range(6)]
    # b (3 free), then a and b tie at 2 (a listed first), then b, then a/b/c tie at 1 ...
    assert [e.name for e in taken] == ["b", "a", "b", "a", "b", "c"]
    assert pool.acquire() is None and pool.waiting() is None  # busy, not held: nothing to say
    pool.release(a)
    assert pool.acquire().name == "a"
    assert answers.asked == {"b": 1, "a": 1, "c": 1}  # asked once, then fresh for FRESH seconds
    assert [(s["name"], s["busy"], s["free"]) for s in pool.status()] == [("a", 2, 0), ("b", 3, 0), ("c", 1, 0)]


def test_a_held_engine_takes_no_job_until_it_answers(monkeypatch):
    monkeypatch.setattr(pool_mod, "RETRY", 0.0)
    answers, said = Answers(), []
    a, b = Engine("a", slots=1), Engine("b", slots=1)
    back = threading.Event()
    pool = EnginePool([a, b], probe=answers, say=said.append, on_back=lambda engine: back.set())
    answers.down["a"] = "connection refused"
    assert pool.acquire().name == "b"  # a is asked, held, skipped
    assert said == ["engine a (docker): held, it does not answer: connection refused"]
    assert pool.acquire() is None  # a held, b busy
    assert pool.waiting() is None  # b answers: the server is not stuck
    status = {s["name"]: s for s in pool.status()}
    assert status["a"]["held"] and status["a"]["reason"] == "connection refused" and status["a"]["hint"]
    pool.hold(b, "lost the Docker engine during the run")  # b failed a run
    pool.release(b)
    assert pool.waiting() == ("engine a does not answer: connection refused; "
                              "engine b does not answer: lost the Docker engine during the run")
    answers.down.clear()
    pool.check_held()  # asked again in the background
    assert back.wait(10)
    for _ in range(100):
        if not any(s["held"] for s in pool.status()):
            break
        back.clear()
        pool.check_held()
        back.wait(1)
    assert not any(s["held"] for s in pool.status())
    assert {e.name for e in (pool.acquire(), pool.acquire())} == {"a", "b"}
    assert "engine a: answers again; it takes jobs" in said
