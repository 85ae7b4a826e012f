# Starts node NODE of attempt ATTEMPT of a job on this host, detached, and prints the wrapper's pid.
#
#   sh start.sh RUN_DIR ATTEMPT NODE DATA PY PORT PORT_FREE N VAR=VALUE... COMMAND...
#
# On the rendezvous node (PORT not empty) it first runs `PY -I -c PORT_FREE PORT` (PORT_FREE: the
# text of port_free.py); if the port is taken it prints `port busy` and starts nothing. Then it makes
# RUN_DIR/attempt-ATTEMPT, resolves DATA against the login directory, exports the N VAR=VALUE words
# and HEADNODE_RUN_DIR (the run dir physically: the marker search compares it with realpath) and
# HEADNODE_DATA (when DATA is set), so every process COMMAND forks carries the marker from its first
# instant: a teardown racing the start cannot miss one. COMMAND (wrap.sh and torchrun) starts in its
# own session in RUN_DIR, all three fds redirected (or the SSH channel would stay open), output to
# attempt-ATTEMPT/node-NODE.log. `export "$1"` takes the word literally: values are never re-parsed.
# A background job of a non-interactive sh is not a group leader, so setsid does not fork: $! is
# COMMAND itself, leader of the node's session and process group.
run_dir=$1 attempt=$2 node=$3 data=$4 py=$5 port=$6 port_free=$7 n=$8; shift 8
if [ -n "$port" ]; then "$py" -I -c "$port_free" "$port"; [ $? -ne 3 ] || { echo "port busy"; exit 0; }; fi
case $data in ''|/*) ;; *) data=$PWD/$data ;; esac
mkdir -p -- "$run_dir/attempt-$attempt" && cd -- "$run_dir" || exit 1
while [ "$n" -gt 0 ]; do export "$1"; shift; n=$((n - 1)); done
export HEADNODE_RUN_DIR="$(pwd -P)"
if [ -n "$data" ]; then export HEADNODE_DATA="$data"; fi
setsid "$@" </dev/null >"attempt-$attempt/node-$node.log" 2>&1 &
echo $!
