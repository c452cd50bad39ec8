# Helpers shared by the bench scripts (sourced, not run).

# sink_done_at SINK_JSON END_FILE -> the wall-clock time (Unix seconds, as
# $EPOCHREALTIME) at which a `ringmail-blast sink --expect N` counted its N-th
# message, from its JSON; when the sink never got there (stopped, timed out),
# the time its wrapper stamped into END_FILE when the process exited. The exit
# itself comes up to a poll (0.1 s) later, after the senders' QUIT, which would
# otherwise be counted in short runs.
sink_done_at() {
    local t
    t=$(grep -o '"expect_reached_at":[0-9.]*' "$1" 2>/dev/null | head -n 1 | cut -d: -f2 || true)
    if [[ -n $t ]]; then echo "$t"; else cat "$2"; fi
}
