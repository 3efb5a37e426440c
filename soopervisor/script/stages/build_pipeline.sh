# build pipeline: build every task, whatever ploomber thinks is up to date.
build_pipeline() {
  if [ "$SV_SAMPLE_IGNORED" = yes ]; then
    echo "soopervisor: warning: a sample run was asked but env.yaml does not declare 'sample': building the full pipeline"
  fi
  echo "soopervisor: ploomber build ${SV_BUILD_ARGS[*]}"
  ploomber build "${SV_BUILD_ARGS[@]}"
}
