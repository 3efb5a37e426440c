# setup env: the environment the pipeline runs in, from the project's spec.
# environment.yml with micromamba, mamba or conda on PATH: a conda environment
# at $SV_CONDA_PREFIX. Otherwise a venv at $SV_VENV, filled by uv (pip when
# uv cannot be had, or SOOPERVISOR_INSTALLER=pip): requirements.txt, or
# environment.yml's plain dependencies that PyPI has and its pip: section.
setup_env() {
  local tool="" candidate
  if [ "$SV_ENV_KIND" = conda ]; then
    for candidate in micromamba mamba conda; do
      if command -v "$candidate" >/dev/null 2>&1; then
        tool=$candidate
        break
      fi
    done
  fi
  if [ -n "$tool" ]; then
    if [ -d "$SV_CONDA_PREFIX/conda-meta" ]; then
      echo "soopervisor: conda environment found at $SV_CONDA_PREFIX, reusing it"
    else
      echo "soopervisor: creating a conda environment at $SV_CONDA_PREFIX from $SV_ENV_FILE with $tool"
      if [ "$tool" = micromamba ]; then
        micromamba create --yes --prefix "$SV_CONDA_PREFIX" --file "$SV_ENV_FILE"
      else
        "$tool" env create --prefix "$SV_CONDA_PREFIX" --file "$SV_ENV_FILE"
      fi
    fi
    soopervisor_activate
    python --version
    return 0
  fi

  if [ "$SV_ENV_KIND" = conda ]; then
    echo "soopervisor: no micromamba, mamba or conda on PATH: installing $SV_ENV_FILE with pip into a venv"
  fi
  if [ -x "$SV_VENV/bin/python" ]; then
    echo "soopervisor: venv found at $SV_VENV, reusing it"
    SV_VENV_REUSED=yes
  elif soopervisor_ensure_uv; then
    echo "soopervisor: creating a venv at $SV_VENV with uv"
    "$SV_UV_DIR/bin/uv" venv --quiet --seed --system-site-packages --python "$(command -v python3)" "$SV_VENV"
  else
    # pip as it is today, not as old as the image's: its resolver is the reference uv is held to
    echo "soopervisor: creating a venv at $SV_VENV (pip and setuptools upgraded)"
    python3 -m venv --system-site-packages --upgrade-deps "$SV_VENV"
  fi
  soopervisor_activate
  python --version
  soopervisor_check_python_pin
  soopervisor_ensure_uv || true

  if [ "$SV_ENV_LOCKED" = yes ]; then
    soopervisor_install_lock "$SV_ENV_FILE"
    return 0
  fi
  if [ "$SV_ENV_KIND" = pip ]; then
    soopervisor_install_spec "$SV_ENV_FILE"
    return 0
  fi
  if [ -n "$SV_CONDA_ONLY" ]; then
    echo "soopervisor: warning: pip cannot install these conda-only dependencies of $SV_ENV_FILE: $SV_CONDA_ONLY"
  fi
  # next to the spec, as conda does, so that "-r other.txt" lines resolve;
  # global on purpose: the EXIT trap of this stage's subshell removes it
  SV_PIP_REQUIREMENTS_FILE=$(mktemp "$(dirname "$SV_ENV_FILE")/.soopervisor-requirements.XXXXXX")
  trap 'rm -f -- "$SV_PIP_REQUIREMENTS_FILE"' EXIT
  soopervisor_pip_requirements >"$SV_PIP_REQUIREMENTS_FILE"
  if [ -s "$SV_PIP_REQUIREMENTS_FILE" ]; then
    soopervisor_install_spec "$SV_PIP_REQUIREMENTS_FILE"
  else
    echo "soopervisor: $SV_ENV_FILE has no pip: section, nothing to install"
  fi
}

# One line: environment.yml's Python pin against the Python the venv runs (a
# mismatch is a warning: the image decides the Python without conda).
soopervisor_check_python_pin() {
  local have
  [ -n "$SV_PYTHON_PIN" ] || return 0
  have=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  case " $SV_PYTHON_OK " in
    *" $have "*) echo "soopervisor: $SV_ENV_FILE pins $SV_PYTHON_PIN; the image has Python $have: met" ;;
    *) echo "soopervisor: warning: $SV_ENV_FILE pins $SV_PYTHON_PIN but the image has Python $have (without conda the image decides): run on an image with that Python${SV_PYTHON_IMAGE:+, e.g. --image $SV_PYTHON_IMAGE}" ;;
  esac
}
