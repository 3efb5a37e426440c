"""The bash script a run executes, rendered from a :class:`~soopervisor.project.Project`.

The travis-build idea: the script is data. :data:`STAGES` is the ordered list of
stages; each is one bash function in ``stages/<function>.sh``, and one runner
template (``runner.sh``) wraps them, announcing, timing and failing every stage
the same way. Adding a stage is adding one entry and one snippet.

Everything that varies with the project is rendered once, as quoted read-only
variables at the top of the script (the "facts"), so the stage bodies are fixed
text that ``shellcheck`` can check as written. The text depends only on the
project: secrets reach the container as environment variables.

Runtime contract (the executor relies on it): the repository tree is at
``<root>/workspace``; the script ``cd``s into the project folder there;
``bash run.sh env`` runs only the environment stages and then writes
``<root>/opt/soopervisor/env.ready``; a full run skips the environment stages
when that file exists; artifacts go to ``<root>/soopervisor/artifacts``.
``root`` is ``/`` except in tests.
"""
from __future__ import annotations

import posixpath
import shlex
import string
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from soopervisor.project import Project

__all__ = ["ARTIFACTS", "ENV_READY", "SCRIPT_PATH", "STAGES", "WORKSPACE", "Stage", "render"]

#: where things are inside the container (with the default root "/")
WORKSPACE = "/workspace"
ENV_READY = "/opt/soopervisor/env.ready"
#: the pinned packages of an environment filled by uv (what issue 17's lock reads)
ENV_LOCK = "/opt/soopervisor/env.lock"
#: every installed package of an environment (describe_env.py), which the run's manifest records
ENV_DESCRIPTION = "/opt/soopervisor/environment.json"
DOWNLOAD_CACHE = "/var/cache/soopervisor"  # soopervisor.downloads.CONTAINER_PATH
ARTIFACTS = "/soopervisor/artifacts"
SCRIPT_PATH = "/soopervisor/run.sh"


@dataclass(frozen=True)
class Stage:
    #: the name announced in the log ("==> soopervisor: <name>")
    name: str
    #: the bash function; its body is ``stages/<function>.sh``
    function: str
    #: an environment stage: runs in ``run.sh env``; skipped in a full run on a cached environment
    env: bool = False
    #: when it fails, the later stages still run and the script exits with its code
    keep_going: bool = False

    @property
    def snippet(self) -> str:
        return f"stages/{self.function}.sh"


STAGES: list[Stage] = [
    Stage("setup env", "setup_env", env=True),
    Stage("ensure ploomber", "ensure_ploomber", env=True),
    Stage("compile bytecode", "compile_bytecode", env=True),
    Stage("install project", "install_project"),
    Stage("build pipeline", "build_pipeline", keep_going=True),
    Stage("collect artifacts", "collect_artifacts", keep_going=True),
]


class _Template(string.Template):
    # "$" belongs to bash; "@@{name}" never appears in bash we write
    delimiter = "@@"


def _read(name: str) -> str:
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def _q(value: str) -> str:
    return shlex.quote(str(value))


def _heredoc(function: str, lines: list[str], comment: str, delim: str = "SOOPERVISOR_REQUIREMENTS") -> str:
    body: list[str] = []
    for entry in lines:
        body.extend(str(entry).split("\n"))  # bash ends heredoc lines at \n only
    while delim in body:
        delim += "_"
    return "\n".join(
        [f"# {comment}", f"{function}() {{", f"  cat <<'{delim}'", *body, delim, "}"]
    )


def env_fingerprint() -> str:
    """Changes whenever the text the environment stages run changes.

    Part of the environment cache key, so an image built by older stages is
    never reused after they change.
    """
    import hashlib

    texts = [_read("runner.sh"), _read("warm_imports.py"), _read("describe_env.py")] + [_read(s.snippet) for s in STAGES if s.env]
    # how environment.yml's conda dependencies become pip requirements
    texts.append(resources.files("soopervisor").joinpath("conda.py").read_text(encoding="utf-8"))
    return hashlib.sha256("\0".join(texts).encode()).hexdigest()


def _version() -> str:
    try:
        from soopervisor import __version__

        return str(__version__)
    except (ImportError, AttributeError):  # pragma: no cover - a partial checkout
        return "(unknown version)"


def render(project: Project, *, sample: bool, root: str = "/", force: bool = True,
           installer: str | None = None, locked: bool = False) -> str:
    """The bash script that runs ``project``: a sample run when ``sample``.

    ``force``: ``ploomber build --force`` (every task rebuilt), what a machine
    with nothing carried over runs (``soopervisor script``, CI). An incremental
    run renders it unforced: ploomber skips the tasks its carried-over products
    and metadata show up to date. ``installer`` (``auto``, ``uv``, ``pip``) fills
    environments; None reads SOOPERVISOR_INSTALLER (default ``auto``: uv, and
    pip when uv cannot be had). ``locked``: the environment spec is a recorded lock
    (``soopervisor reproduce``), installed as it is, nothing resolved again.

    ``root`` prefixes the container paths (``/workspace``, ``/opt/soopervisor``,
    ``/soopervisor``); tests pass a temporary folder to run the script on the host.
    """
    if not project.env_file:
        raise ValueError("the project has no environment spec (environment.yml or requirements.txt)")
    subdir = project.subdir.strip("/")
    if subdir and (posixpath.isabs(project.subdir) or ".." in subdir.split("/")):
        raise ValueError(f"unsafe project sub-folder: {project.subdir!r}")

    from soopervisor.environment import installer_setting

    installer = installer_setting() if installer is None else installer

    def at(*parts: str) -> str:
        return posixpath.join(root, *parts)

    workspace = at(WORKSPACE.lstrip("/"))
    project_dir = posixpath.join(workspace, subdir) if subdir else workspace
    opt = at("opt/soopervisor")
    # relative to the project folder: ../requirements.txt when the spec is above it
    conda_kind = posixpath.basename(project.env_file).startswith("environment.")
    from soopervisor.conda import image_for, python_minors

    pin = getattr(project, "python_pin", None) if conda_kind else None
    python_ok = python_minors(pin) if pin else None

    build_args = ["--entry-point", getattr(project, "entry_point", None) or "pipeline.yaml"]
    if force:
        build_args.append("--force")
    if project.declares_sample:
        build_args += ["--env--sample", "true" if sample else "false"]

    facts = [
        ("SV_PROJECT_NAME", project.name),
        # a sample run needs env.yaml's sample key; without it the full pipeline is built
        ("SV_RUN_KIND", "sample" if sample and project.declares_sample else "full"),
        ("SV_PROJECT_DIR", project_dir),
        ("SV_ENV_READY", at(ENV_READY.lstrip("/"))),
        ("SV_CONDA_PREFIX", posixpath.join(opt, "conda")),
        ("SV_VENV", posixpath.join(opt, "venv")),
        ("SV_UV_DIR", posixpath.join(opt, "uv")),
        ("SV_ENV_LOCK", at(ENV_LOCK.lstrip("/"))),
        ("SV_ENV_DESCRIPTION", at(ENV_DESCRIPTION.lstrip("/"))),
        ("SV_INSTALLER", installer),
        ("SV_DOWNLOAD_CACHE", at(DOWNLOAD_CACHE.lstrip("/"))),
        ("SV_ARTIFACTS", at(ARTIFACTS.lstrip("/"))),
        ("SV_ENV_FILE", project.env_file),
        ("SV_ENV_KIND", "conda" if conda_kind else "pip"),
        ("SV_ENV_LOCKED", "yes" if locked else "no"),
        ("SV_CONDA_ONLY", ", ".join(project.conda_only) if conda_kind else ""),
        # environment.yml's Python pin and the minor versions that meet it ("" when unreadable)
        ("SV_PYTHON_PIN", project.python_pin if python_ok is not None else ""),
        ("SV_PYTHON_OK", " ".join(python_ok or [])),
        ("SV_PYTHON_IMAGE", (image_for(pin) or "") if python_ok is not None else ""),
        ("SV_INSTALLABLE", "yes" if project.installable else "no"),
        ("SV_SAMPLE_IGNORED", "yes" if sample and not project.declares_sample else "no"),
    ]
    lines = [f"readonly {k}={_q(v)}" for k, v in facts]
    lines.append(f"readonly -a SV_BUILD_ARGS=({' '.join(_q(a) for a in build_args)})")
    collect = project.collect_paths or ["output"]
    lines.append(f"readonly -a SV_COLLECT_PATHS=({' '.join(_q(p) for p in collect)})")

    if conda_kind:
        requirements = _heredoc(
            "soopervisor_pip_requirements", project.pip_requirements,
            f"for pip without conda: the plain dependencies of {project.env_file} that PyPI has, "
            "then its pip: section verbatim (a quoted heredoc: nothing expands)",
        )
    else:
        requirements = (
            "# requirements.txt is installed as it is (pip install -r requirements.txt)\n"
            "soopervisor_pip_requirements() {\n  :\n}"
        )

    stages = "\n".join(_read(s.snippet) for s in STAGES)
    # the build stage's runner (task_events.py), kept as a file of the package so it is
    # linted and tested as Python; a quoted heredoc: nothing in it expands
    stages += "\n" + _heredoc(
        "soopervisor_describe_env", _read("describe_env.py").rstrip("\n").split("\n"),
        "what an environment build records of its packages; a quoted heredoc: nothing in it expands",
        delim="END_OF_DESCRIBE_ENV",
    )
    stages += "\n" + _heredoc(
        "soopervisor_warm_imports", _read("warm_imports.py").rstrip("\n").split("\n"),
        "the bytecode warm-up of the compile bytecode stage; a quoted heredoc: nothing in it expands",
        delim="END_OF_WARM_IMPORTS",
    )
    stages += "\n" + _heredoc(
        "soopervisor_task_runner", _read("task_events.py").rstrip("\n").split("\n"),
        "the runner of the build stage: ploomber build, reporting each task as an event line",
        delim="END_OF_TASK_RUNNER",
    )

    main: list[str] = []
    env_done = False
    for s in STAGES:
        if not s.env and not env_done:
            env_done = True
            main += [
                '  if [ "$SV_ONLY_ENV" = yes ]; then',
                '    mkdir -p "$(dirname "$SV_ENV_READY")"',
                "    soopervisor_activate",
                '    python -c "$(soopervisor_describe_env)" "$SV_ENV_DESCRIPTION" "$SV_ENV_LOCK.hashes" ||',
                '      echo "soopervisor: warning: the packages of the environment could not be recorded"',
                '    touch "$SV_ENV_READY"',
                '    echo "soopervisor: environment ready, marked by $SV_ENV_READY"',
                "    exit 0",
                "  fi",
            ]
        call = f"soopervisor_stage {'env' if s.env else 'run'} {_q(s.name)} {s.function}"
        if s.keep_going:
            main += [
                "  set +e",
                f"  {call}",
                "  stage_status=$?",
                "  set -e",
                '  if [ "$status" -eq 0 ]; then status=$stage_status; fi',
            ]
        else:
            main.append(f"  {call}")

    return _Template(_read("runner.sh")).substitute(
        version=_version(),
        facts="\n".join(lines),
        requirements=requirements,
        stages=stages,
        main="\n".join(main),
    )
