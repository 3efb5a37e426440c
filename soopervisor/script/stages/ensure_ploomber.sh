# ensure ploomber: install ploomber only when the environment lacks it.
# Asked of the installed metadata, not by importing ploomber: an import costs
# seconds (and compiles bytecode the compile bytecode stage compiles anyway).
ensure_ploomber() {
  local version
  if version=$(python -c 'from importlib.metadata import version; print(version("ploomber"))' 2>/dev/null); then
    echo "soopervisor: ploomber $version is already installed"
  else
    echo "soopervisor: ploomber is not installed, installing it"
    soopervisor_install ploomber
  fi
}
