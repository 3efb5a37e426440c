"""`soopervisor cache list|prune` on real environment images in the real engine.

Nothing is built: each test makes a few small images tagged ``soopervisor-env:test-*`` by
committing containers of the base image (with the labels a run's build gives them), built
"from" a base tag of its own so that ``--base`` keeps the test away from every other cached
environment on this engine.
"""
from __future__ import annotations

import json
import uuid

import pytest

from soopervisor import cache

from .conftest import cli

MB = 1000 * 1000


@pytest.fixture
def images(docker_client, base_image, home):
    """Four env images of 7 MB each (what they add to their base); oldest use first.

    ``made["refs"][0]`` is the least recently used, ``[3]`` the most recent.
    """
    uid = uuid.uuid4().hex[:10]
    base = f"soopervisor-test-base:{uid}"
    docker_client.images.get(base_image).tag(base)
    refs = [f"soopervisor-env:test-{uid}-{i}" for i in range(4)]
    try:
        for i, ref in enumerate(refs):
            c = docker_client.containers.run(base, ["sh", "-c", f"head -c {7 * MB} /dev/urandom > /blob{i}"], detach=True)
            try:
                assert c.wait(timeout=120)["StatusCode"] == 0
                repo, tag = ref.split(":")
                c.commit(repository=repo, tag=tag, conf={"Labels": {
                    "soopervisor.env-hash": f"{uid}{i}", "soopervisor.base-image": base, "soopervisor.run": "",
                }})
            finally:
                c.remove(force=True)
            cache.mark_used(ref, f"2026-01-0{i + 1}T10:00:00+00:00")  # as a run does when it uses one
        yield {"base": base, "refs": refs}
    finally:
        for ref in [*refs, base]:
            try:
                docker_client.images.remove(ref, force=True)
            except Exception:  # noqa: BLE001, S110 - removed by the test itself
                pass


@pytest.fixture
def in_use(docker_client, images):
    """A running container on the least recently used image: a run in progress."""
    c = docker_client.containers.run(images["refs"][0], ["sleep", "600"], detach=True)
    yield c
    c.remove(force=True)


def _exists(client, ref: str) -> bool:
    return bool(client.images.list(name=ref))


def test_cache_list_shows_base_size_and_last_use_most_recent_first(images, in_use):
    refs = images["refs"]
    proc = cli("cache", "list", "--base", images["base"], check=0)
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:3] == ["IMAGE", "BASE", "IMAGE"]
    assert [line.split()[0] for line in lines[1:5]] == refs[::-1]
    assert all(images["base"] in line and "7.0 MB" in line for line in lines[1:5])
    assert "2026-01-04 10:00:00" in lines[1]
    assert lines[4].endswith("(in use)") and not lines[1].endswith("(in use)")
    assert lines[5] == "4 images, 28.0 MB"

    rows = json.loads(cli("cache", "list", "--base", images["base"], "--json", check=0).stdout)
    assert [r["image"] for r in rows] == refs[::-1]
    assert [r["in_use"] for r in rows] == [False, False, False, True]
    assert rows[0]["last_used"] == "2026-01-04T10:00:00+00:00" and rows[0]["base"] == images["base"]


def test_an_environment_built_on_an_earlier_one_counts_only_what_it_adds(docker_client, base_image, home):
    # a changed requirement builds on the last environment (soopervisor.env-depth 1): its image holds the
    # earlier one's layers, which the earlier image already counts
    uid = uuid.uuid4().hex[:10]
    base = f"soopervisor-test-base:{uid}"
    docker_client.images.get(base_image).tag(base)
    first, second = f"soopervisor-env:test-{uid}-0", f"soopervisor-env:test-{uid}-1"
    try:
        for ref, parent, depth, blob in ((first, base, "0", 7), (second, first, "1", 3)):
            c = docker_client.containers.run(parent, ["sh", "-c", f"head -c {blob * MB} /dev/urandom > /blob{depth}"],
                                             detach=True)
            try:
                assert c.wait(timeout=120)["StatusCode"] == 0
                repo, tag = ref.split(":")
                c.commit(repository=repo, tag=tag, conf={"Labels": {
                    "soopervisor.env-hash": f"{uid}{depth}", "soopervisor.base-image": base,
                    "soopervisor.env-depth": depth, "soopervisor.run": ""}})
            finally:
                c.remove(force=True)
        rows = {r["image"]: r for r in json.loads(cli("cache", "list", "--base", base, "--json", check=0).stdout)}
        assert round(rows[first]["size"] / MB) == 7 and round(rows[second]["size"] / MB) == 3, rows
        assert cli("cache", "list", "--base", base, check=0).stdout.splitlines()[-1] == "2 images, 10.0 MB"
    finally:
        for ref in (second, first, base):
            try:
                docker_client.images.remove(ref, force=True)
            except Exception:  # noqa: BLE001, S110 - not made
                pass


def test_prune_keep_removes_least_recently_used_first_never_one_in_use(images, in_use, docker_client):
    refs, base = images["refs"], images["base"]

    proc = cli("cache", "prune", "--base", base, "--keep", "1", "--dry-run", check=0)
    said = [line.split()[2] for line in proc.stdout.splitlines() if line.startswith("would remove soopervisor-env")]
    assert said == [refs[1], refs[2]]  # the oldest, refs[0], is in use
    assert all(_exists(docker_client, r) for r in refs)  # a dry run removes nothing

    proc = cli("cache", "prune", "--base", base, "--keep", "1", check=0)
    said = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("removed soopervisor-env")]
    assert said == [refs[1], refs[2]]
    assert "removed 2 images, 14.0 MB; 1 in use kept" in proc.stdout
    assert [_exists(docker_client, r) for r in refs] == [True, False, False, True]
    # the record of last use forgets what is gone
    assert not {refs[1], refs[2]} & set(json.loads((cache.config.data_dir() / "env-images.json").read_text()))


def test_prune_max_size_removes_until_the_rest_fit(images, in_use, docker_client):
    refs, base = images["refs"], images["base"]
    # 4 x 7 MB; 15 MB left at most: the least recently used that is not in use go first
    proc = cli("cache", "prune", "--base", base, "--max-size", "15m", check=0)
    said = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("removed soopervisor-env")]
    assert said == [refs[1], refs[2]]
    assert [_exists(docker_client, r) for r in refs] == [True, False, False, True]

    # nothing over the size: nothing removed
    proc = cli("cache", "prune", "--base", base, "--max-size", "1g", check=0)
    assert "removed 0 images" in proc.stdout


def test_prune_without_a_limit_removes_every_image_not_in_use(images, in_use, docker_client):
    refs = images["refs"]
    cli("cache", "prune", "--base", images["base"], check=0)
    assert [_exists(docker_client, r) for r in refs] == [True, False, False, False]


def test_a_size_that_is_not_one_is_a_usage_error(images):
    proc = cli("cache", "prune", "--base", images["base"], "--max-size", "lots", check=2)
    assert "--max-size='lots' is not a size" in proc.stderr and "20g" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_size_cap_setting_is_parsed_as_a_size(monkeypatch):
    monkeypatch.setenv(cache.MAX_SIZE_VARIABLE, "20g")
    assert cache.max_size_setting() == 20 * 1024**3
    monkeypatch.setenv(cache.MAX_SIZE_VARIABLE, "big")
    with pytest.raises(cache.UsageError, match="SOOPERVISOR_CACHE_MAX_SIZE='big' is not a size"):
        cache.max_size_setting()
    monkeypatch.delenv(cache.MAX_SIZE_VARIABLE)
    assert cache.max_size_setting() is None
