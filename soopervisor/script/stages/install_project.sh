# install project: pip install the project when it is a package.
install_project() {
  if [ "$SV_INSTALLABLE" = yes ]; then
    soopervisor_install .
  else
    echo "soopervisor: no setup.py or pyproject.toml, skipping"
  fi
}
