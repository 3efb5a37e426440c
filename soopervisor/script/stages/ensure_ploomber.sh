# ensure ploomber: install ploomber only when the environment lacks it.
ensure_ploomber() {
  local version
  if version=$(python -W ignore -c 'import ploomber; print(ploomber.__version__)' 2>/dev/null); then
    echo "soopervisor: ploomber $version is already installed"
  else
    echo "soopervisor: ploomber is not installed, installing it"
    soopervisor_pip_install ploomber
  fi
}
