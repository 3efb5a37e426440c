# collect artifacts: copy what the pipeline produced to $SV_ARTIFACTS, keeping
# relative paths. Runs even when the build failed: partial outputs help.
# A missing path is named, except output/ when the pipeline declares its
# products elsewhere (output/ is then looked at only in case).
#
# The container runs as root without capabilities, so root can neither read
# another user's private file nor give a copy another owner. Regular files
# and links it can read are copied (owner not kept, mode and times kept);
# what it cannot read, folders it cannot enter and special files (fifos,
# sockets, devices) are named in a warning and left out, never failing the stage.
collect_artifacts() {
  local path files skipped name count=0 left_out=0 collected=""
  mkdir -p "$SV_ARTIFACTS"
  for path in "${SV_COLLECT_PATHS[@]}"; do
    if [ -e "$path" ] || [ -L "$path" ]; then
      skipped=$(find "./$path" \
        \( -type d \( ! -readable -o ! -executable \) -prune -printf '%p\n' \) -o \
        \( ! -type d ! -type l \( ! -type f -o ! -readable \) -printf '%p\n' \))
      if [ -n "$skipped" ]; then
        while IFS= read -r name; do
          echo "soopervisor: warning: cannot read ${name#./} (another user's, or not a regular file): not collected"
          left_out=$((left_out + 1))
        done <<<"$skipped"
      fi
      find "./$path" \( -type d \( ! -readable -o ! -executable \) -prune \) -o \
        \( \( -type l -o \( -type f -readable \) \) \
        -exec cp -d --preserve=mode,timestamps --parents -t "$SV_ARTIFACTS" -- {} + \)
      files=$(find "./$path" \( -type d \( ! -readable -o ! -executable \) -prune \) -o \
        \( \( -type l -o \( -type f -readable \) \) -printf x \) | wc -c)
      count=$((count + files))
      collected="$collected $path"
    elif [ "$path" != output ] || [ "${#SV_COLLECT_PATHS[@]}" -eq 1 ]; then
      # output/ is always looked at; its absence is news only when it is the
      # one place products go (the pipeline declares nothing elsewhere)
      echo "soopervisor: $path does not exist, nothing to collect there"
    fi
  done
  if [ "$count" -eq 1 ]; then
    echo "soopervisor: collected 1 file from:${collected:- (nothing)}"
  else
    echo "soopervisor: collected $count files from:${collected:- (nothing)}"
  fi
  if [ "$left_out" -gt 0 ]; then
    echo "soopervisor: warning: $left_out unreadable path(s) left out (see above)"
  fi
}
