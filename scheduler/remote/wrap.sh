# Runs COMMAND in the foreground, then writes its exit status to EXIT_FILE as text ("0\n"; 128+N when
# a signal N killed it), atomically (temp + rename): a reader that sees the file sees all of it.
#
#   sh wrap.sh EXIT_FILE COMMAND...
#
# Constant text: every user part arrives as a positional argument, so nothing the user typed is parsed
# by a shell. start.sh starts it as the leader of the node's process group.
exitf=$1; shift; "$@"; code=$?; printf "%s\n" "$code" >"$exitf.tmp" && mv -f -- "$exitf.tmp" "$exitf"
