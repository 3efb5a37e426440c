"""conda dependencies for pip: what an ``environment.yml`` means when the image has no conda.

A run on an image without micromamba, mamba or conda builds a venv and installs
with pip. ``translate`` turns the plain conda dependencies (the ``dependencies:``
entries that are not the ``pip:`` section) into pip requirements:

* the spec syntax: ``pandas=1.5`` -> ``pandas==1.5.*``, ``numpy=1.24.3=py311h…``
  (the build string dropped), ``scipy 1.10.*``, ``conda-forge::x`` (the channel
  dropped), ``x[version='>=1,<2']``;
* the common name differences (:data:`PIP_NAMES`: ``pytorch`` -> ``torch``, …);
* what pip needs no package for (:data:`SYSTEM`: ``python``, ``pip``, C
  runtime libraries, compilers, BLAS builds): skipped without a word, because
  the image provides them or the wheels bundle them, and naming them would be
  noise a user cannot act on;
* what no pip package provides (:data:`NOT_ON_PYPI`, ``r-*``, ``cuda-*``,
  ``*_linux-64`` toolchains): returned as *dropped*; validation warns about
  them and a run failing with ``No module named …`` on one of them says so.

The ``python`` entry is the version pin, compared with the image's Python
(:func:`python_minors`). Nothing here imports anything but the standard library.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = [
    "NOT_ON_PYPI", "PIP_NAMES", "SYSTEM", "Translation", "dropped_cause", "image_for", "image_python",
    "pin_met", "python_minors", "to_pip", "translate",
]

#: conda name -> PyPI name, where they differ
PIP_NAMES = {
    "pytorch": "torch",
    "pytorch-cpu": "torch",
    "pytorch-gpu": "torch",
    "py-xgboost": "xgboost",
    "py-xgboost-cpu": "xgboost",
    "py-xgboost-gpu": "xgboost",
    "matplotlib-base": "matplotlib",
    "pytables": "tables",
    "python-graphviz": "graphviz",
    "opencv": "opencv-python",
    "py-opencv": "opencv-python",
    "libopencv": "opencv-python",
    "tensorflow-base": "tensorflow",
    "tensorflow-gpu": "tensorflow",
    "numpy-base": "numpy",
    "msgpack-python": "msgpack",
    "python-kaleido": "kaleido",
    "python-duckdb": "duckdb",
    "python-lmdb": "lmdb",
    "python-annoy": "annoy",
    "pyqt": "PyQt5",
    "ruamel_yaml": "ruamel.yaml",
    "py-lightgbm": "lightgbm",
    "lightgbm-cpu": "lightgbm",
    "pyarrow-core": "pyarrow",
    "pyarrow-all": "pyarrow",
    "polars-lts-cpu": "polars-lts-cpu",
    "pywin32": "pywin32",
    "jupyter_core": "jupyter-core",
    "typing_extensions": "typing-extensions",
}

#: conda packages pip needs nothing for: the interpreter and installer the image
#: has, C/C++ runtimes and libraries manylinux wheels bundle, compiler
#: metapackages, BLAS selectors (numpy's and scipy's wheels bundle OpenBLAS)
SYSTEM = frozenset({
    "python", "pip", "setuptools", "wheel", "conda", "mamba", "micromamba", "conda-build",
    "libgcc", "libgcc-ng", "libgomp", "libstdcxx", "libstdcxx-ng", "_libgcc_mutex", "_openmp_mutex",
    "ld_impl_linux-64", "openssl", "ca-certificates", "tzdata", "zlib", "libzlib", "xz", "bzip2",
    "libffi", "ncurses", "readline", "sqlite", "libsqlite", "tk", "libuuid", "libnsl", "libxcrypt",
    "libiconv", "expat", "libexpat", "libedit", "icu", "jpeg", "libjpeg-turbo", "libpng", "freetype",
    "compilers", "c-compiler", "cxx-compiler", "fortran-compiler",
    "blas", "libblas", "libcblas", "liblapack", "openblas", "libopenblas", "nomkl", "cpuonly",
})

#: conda packages no pip package installs: R, CUDA, MKL, toolchains, system programs
NOT_ON_PYPI = frozenset({
    "r", "r-base", "r-essentials", "rpy2-r", "cudatoolkit", "cudnn", "cuda", "cuda-toolkit",
    "cuda-nvcc", "nccl", "pytorch-cuda", "mkl", "mkl-include", "mkl-devel",
    "gcc", "gxx", "gfortran", "clang", "make", "gdal", "libgdal", "proj", "geos", "graphviz",
    "nodejs", "openjdk", "julia", "ffmpeg", "poppler", "tesseract", "cairo", "imagemagick",
    "pandoc", "texlive-core", "git", "unixodbc", "postgresql", "libpq", "mysql", "hdf5",
    "libnetcdf", "gsl", "boost", "boost-cpp", "eigen", "openmpi", "mpich", "libxgboost",
})

#: a dropped dependency whose Python module has another name
_MODULES = {"mkl": ("mkl",), "graphviz": ("pygraphviz",), "gdal": ("osgeo",), "libgdal": ("osgeo",),
            "r-base": ("rpy2",), "cudatoolkit": ("cupy", "numba.cuda"), "openjdk": ("jpype",)}

_CHANNEL = re.compile(r"^[^\s:]+::")
_NAME = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", re.DOTALL)


@dataclass(frozen=True)
class Translation:
    """The plain conda dependencies of an environment.yml, sorted for pip."""

    #: pip requirement lines, in the order of the file
    pip: list[str] = field(default_factory=list)
    #: the entries pip cannot install, as written
    dropped: list[str] = field(default_factory=list)
    #: the ``python`` entry (channel dropped), None when it pins nothing
    python_pin: str | None = None


def conda_name(dep: str) -> str:
    """``conda-forge::Pandas>=1.5`` -> ``pandas``."""
    m = _NAME.match(_CHANNEL.sub("", dep.strip()))
    return m.group(1).lower() if m else ""


def _split(dep: str) -> tuple[str, str]:
    """(name, conda version spec without the build string): ``numpy=1.24=py311h0`` -> (numpy, =1.24)."""
    s = _CHANNEL.sub("", dep.strip())
    m = _NAME.match(s)
    if not m:
        return "", ""
    name, rest = m.group(1).lower(), m.group(2).strip()
    bracket = re.search(r"\[(.*)\]", rest)
    if bracket:  # name[version='>=1.5,<2', build=...]
        v = re.search(r"""version\s*=\s*(['"])(.*?)\1|version\s*=\s*([^,\]\s]+)""", bracket.group(1))
        rest = (rest[: bracket.start()] + " " + ((v.group(2) or v.group(3)) if v else "")).strip()
    rest = rest.split()[0] if rest else ""  # "1.5.* py311_0": the build string goes
    if rest.startswith("=") and not rest.startswith("=="):
        return name, "=" + rest[1:].split("=")[0]  # "=1.5=build"
    op = re.match(r"^(==|!=|>=|<=|~=|>|<)?", rest).group(0)
    return name, op + rest[len(op):].split("=")[0]  # "==1.5=build", "1.5"


def _pep440(spec: str) -> str | None:
    """A conda version spec as a PEP 440 specifier; '' for any version, None when pip cannot say it.

    conda's ``=1.5`` is the 1.5 series (``==1.5.*``), a bare ``1.5`` that
    release (``==1.5``), ``1.5*`` the series; ``,`` is "and" in both.
    """
    spec = spec.strip()
    if not spec:
        return ""
    if "|" in spec:
        return None  # "or" has no PEP 440 form: any version
    out = []
    for part in spec.split(","):
        m = re.match(r"^(==|!=|>=|<=|~=|>|<|=)?\s*(.+)$", part.strip())
        if not m:
            return None
        op, version = m.group(1) or "", m.group(2)
        if version.endswith("*"):
            version = version.rstrip("*").rstrip(".") + ".*"
        if op == "=":
            op = "=="
            version = version if version.endswith(".*") else version + ".*"
        elif not op:
            op = "=="
        if version.endswith(".*") and op not in ("==", "!="):
            version = version[:-2]  # ">=1.5.*" means ">=1.5"
        if not re.fullmatch(r"[0-9][0-9A-Za-z.+!]*?(\.\*)?", version):
            return None
        out.append(op + version)
    return ",".join(out)


def to_pip(dep: str) -> tuple[str, str | None]:
    """(kind, pip requirement) of one conda dependency; kind is "pip", "system" or "dropped"."""
    name, spec = _split(dep)
    if not name or name in SYSTEM:
        return "system", None
    if (name in NOT_ON_PYPI or name.startswith(("r-", "cuda-", "libcu", "bioconductor-"))
            or re.search(r"_(linux|osx|win)-(64|32|aarch64|ppc64le|arm64)$", name)):
        return "dropped", None
    pip_name = PIP_NAMES.get(name, name)
    specifier = _pep440(spec)
    return "pip", pip_name + (specifier or "")


def translate(deps: list[str]) -> Translation:
    """Sort the plain conda dependencies of an environment.yml for a pip install."""
    t = Translation()
    for dep in deps:
        if conda_name(dep) == "python":
            pin = _CHANNEL.sub("", dep.strip())
            if _split(pin)[1]:
                object.__setattr__(t, "python_pin", pin)
            continue
        kind, req = to_pip(dep)
        if kind == "pip" and req:
            t.pip.append(req)
        elif kind == "dropped":
            t.dropped.append(dep)
    return t


# -- the Python pin -----------------------------------------------------------------------------

#: the minor versions a pin is checked against
_MINORS = [(3, m) for m in range(6, 21)]


def _satisfiable(spec: str, minor: tuple[int, int]) -> bool:
    """Some release ``minor[0].minor[1].z`` meets the PEP 440 ``spec`` (a pin finer than minor counts as met)."""
    low, high = (*minor, 0), (*minor, 10**6)
    for part in filter(None, spec.split(",")):
        m = re.match(r"^(==|!=|>=|<=|~=|>|<)(.+)$", part)
        if not m:
            return True
        op, v = m.groups()
        star = v.endswith(".*")
        nums = tuple(int(x) for x in re.findall(r"\d+", v.removesuffix(".*")))[:3]
        if op == "!=":
            continue
        if op == "==":
            if nums[:2] != minor[: len(nums)]:
                return False
            continue
        if op == "~=":  # ~=3.10 is >=3.10,==3.*; ~=3.10.2 is >=3.10.2,==3.10.*
            prefix = nums[:-1][:2]
            if minor[: len(prefix)] != prefix or high < nums + (0,) * (3 - len(nums)):
                return False
            continue
        full = nums + (0,) * (3 - len(nums))
        if star:
            full = nums + (10**6,) * (3 - len(nums)) if op in ("<=", ">") else full
        if op == ">=" and not high >= full:
            return False
        if op == ">" and not high > full:
            return False
        if op == "<" and not low < full:
            return False
        if op == "<=" and not low <= full:
            return False
    return True


def python_minors(pin: str) -> list[str] | None:
    """The Python minor versions ("3.10") that meet a conda pin such as ``python=3.10``; None when unreadable."""
    spec = _pep440(_split(pin)[1])
    if not spec:
        return None
    return [f"{a}.{b}" for a, b in _MINORS if _satisfiable(spec, (a, b))]


#: the python3 of Debian's releases, for images named by one (debian:bookworm, soopervisor/base:bookworm)
_DEBIAN_PYTHON = {"bullseye": "3.9", "bookworm": "3.11", "trixie": "3.13"}
#: the minor versions with a python:X.Y-slim image, newest last
_IMAGES = [f"3.{m}" for m in range(8, 14)]


def image_python(image: str) -> str | None:
    """The Python minor version an image name tells (``python:3.11-slim`` -> ``3.11``), else None."""
    m = re.match(r"^(?:[\w.\-]+(?::\d+)?/)*(?:library/)?python:(\d+)\.(\d+)", image)
    if m:
        return f"{m.group(1)}.{m.group(2)}"
    tag = image.rsplit(":", 1)[-1] if ":" in image.rsplit("/", 1)[-1] else ""
    return _DEBIAN_PYTHON.get(tag.split("-")[0])


def image_for(pin: str) -> str | None:
    """A public image whose Python meets ``pin`` (the newest that does), e.g. ``python:3.8-slim``."""
    ok = python_minors(pin) or []
    fits = [v for v in _IMAGES if v in ok] or ok
    return f"python:{fits[-1]}-slim" if fits else None


def pin_met(pin: str, minor: str) -> bool | None:
    """Whether Python ``minor`` ("3.11") meets ``pin``; None when the pin cannot be read."""
    ok = python_minors(pin)
    return None if ok is None else minor in ok


# -- a failed run ----------------------------------------------------------------------------------

_NO_MODULE = re.compile(r"""No module named ['"]?([A-Za-z0-9_.]+)""")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def dropped_cause(lines: list[str], dropped: list[str], env_file: str) -> str | None:
    """The sentence that ties a ``No module named 'x'`` in ``lines`` to a dependency pip could not install."""
    if not dropped:
        return None
    for line in reversed(lines):
        m = _NO_MODULE.search(line)
        if not m:
            continue
        module = m.group(1)
        top = module.split(".")[0]
        for dep in dropped:
            name = conda_name(dep)
            modules = {_norm(name), _norm(name.removeprefix("py-").removeprefix("python-")),
                       *(_norm(x) for x in _MODULES.get(name, ()))}
            if _norm(top) in modules or _norm(module) in modules:
                return (f"No module named '{module}': {env_file} lists '{dep}', which pip cannot install "
                        "(the image has no conda); use an image with micromamba or conda, or "
                        "a pip package that provides it")
        return None
    return None
