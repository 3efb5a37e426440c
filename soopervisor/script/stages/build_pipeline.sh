# build pipeline: ploomber build. Forced (--force in SV_BUILD_ARGS) it builds
# every task; an incremental run (products and .metadata files of an earlier
# set already in place) builds only what ploomber finds outdated.
# Given a task-event nonce (soopervisor's runs give one), the build runs in a
# small runner: `ploomber build` in-process, reporting each task (started,
# finished, failed) as one marked line carrying the nonce. Without one (the
# script run by hand) it is plain `ploomber build`; the runner itself falls
# back to it on a ploomber it cannot hook, and says so.
build_pipeline() {
  if [ "$SV_SAMPLE_IGNORED" = yes ]; then
    echo "soopervisor: warning: a sample run was asked but env.yaml does not declare 'sample': building the full pipeline"
  fi
  echo "soopervisor: ploomber build ${SV_BUILD_ARGS[*]}"
  if [ -n "${SOOPERVISOR_TASK_EVENTS:-}" ]; then
    python -c "$(soopervisor_task_runner)" "${SV_BUILD_ARGS[@]}"
  else
    ploomber build "${SV_BUILD_ARGS[@]}"
  fi
}
