# compile bytecode: once, in the environment image, instead of in every run.
# pip and conda compile as they install; uv does not, and compiling all it
# installed costs more than the install: the modules that importing the
# environment's top-level packages reaches are compiled instead (see
# warm_imports.py), at most 5 minutes, never failing the build.
compile_bytecode() {
  if [ -d "$SV_CONDA_PREFIX/conda-meta" ] || [ ! -x "$SV_UV_DIR/bin/uv" ] || [ "$SV_INSTALLER" = pip ]; then
    echo "soopervisor: the installer compiled the bytecode"
    return 0
  fi
  timeout 300 python -c "$(soopervisor_warm_imports)" "$SV_ENV_READY" ||
    echo "soopervisor: warning: compiling bytecode stopped early (exit code $?); runs compile the rest as they import"
}
