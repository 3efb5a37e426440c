# collect artifacts: copy what the pipeline produced to $SV_ARTIFACTS, keeping
# relative paths. Runs even when the build failed: partial outputs help.
collect_artifacts() {
  local path parent files count=0 collected=""
  mkdir -p "$SV_ARTIFACTS"
  for path in "${SV_COLLECT_PATHS[@]}"; do
    if [ -e "$path" ] || [ -L "$path" ]; then
      parent=$(dirname -- "$path")
      mkdir -p "$SV_ARTIFACTS/$parent"
      cp -a -- "$path" "$SV_ARTIFACTS/$parent/"
      files=$(find "./$path" \( -type f -o -type l \) | wc -l)
      count=$((count + files))
      collected="$collected $path"
    else
      echo "soopervisor: $path does not exist, nothing to collect there"
    fi
  done
  if [ "$count" -eq 1 ]; then
    echo "soopervisor: collected 1 file from:${collected:- (nothing)}"
  else
    echo "soopervisor: collected $count files from:${collected:- (nothing)}"
  fi
}
