# Runs COMMAND in the foreground, then writes its exit status to EXIT_FILE as text ("0\n"; 128+N when
# a signal N killed it), atomically (temp + rename): a reader that sees the file sees all of it.
#
#   sh wrap.sh EXIT_FILE COMMAND...
#
# Constant text: every user part arrives as a positional argument, so nothing the user typed is parsed
# by a shell. start.sh starts it as the leader of the node's process group.
#
# It runs nothing when its attempt ended before it got here (a start that outlived its SIGKILLed loop and
# landed after the next loop recorded the node as never started): kill.py writes attempt-N/ended before
# it scans for the markers this process already carries, so either this sees the file or kill.py sees it.
exitf=$1; shift
if [ -e "${exitf%/*}/ended" ]; then echo "headnode: ${exitf%/*} ended before this node started; not starting it"; exit 0; fi
"$@"; code=$?; printf "%s\n" "$code" >"$exitf.tmp" && mv -f -- "$exitf.tmp" "$exitf"
