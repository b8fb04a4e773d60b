# Sourced by load.sh and profile.sh once `WORK` is set: the processes to
# stop on exit (append their pids to PIDS) and free ports. $WORK is removed
# on exit unless KEEP_WORK is non-empty.

PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  [[ -n "${KEEP_WORK:-}" ]] || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Ports below the kernel's ephemeral range (32768+ here), so an outgoing
# connection's local port is never picked, and distinct within this run.
TAKEN_PORTS=""
free_port() { # name: set the variable `name` to a free port
  local p
  for _ in $(seq 100); do
    p=$((20000 + RANDOM % 12000))
    if [[ " $TAKEN_PORTS " != *" $p "* ]] && ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      TAKEN_PORTS+=" $p"
      printf -v "$1" '%s' "$p"
      return
    fi
  done
  echo "no free port" >&2
  return 1
}
