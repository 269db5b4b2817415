# common.sh - helpers sourced by the launcher tests (bash).

# field KEY LINE: the value of KEY in a JSON line (strings unquoted)
field() { sed -E "s/.*\"$1\": \"?([^,\"}]*).*/\1/" <<<"$2"; }
# json FILE: the last JSON line of a program's output
json() { grep '^{' "$1" | tail -n 1; }

# wait_first_checkpoint DIR PID [TENTHS]: wait (at most TENTHS tenths of a
# second, default 600) until DIR holds a file while PID runs. 0 when both
# hold then; else prints why and returns 1.
wait_first_checkpoint() {
    local dir=$1 pid=$2 n=${3:-600}
    for _ in $(seq "$n"); do
        [ -z "$(find "$dir" -type f 2>/dev/null | head -n 1)" ] || break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null || { echo "FAIL: the run ended before the fault"; return 1; }
    [ -n "$(find "$dir" -type f | head -n 1)" ] || { echo "FAIL: no checkpoint in $dir after $((n / 10)) s"; return 1; }
}

# rank_pids PATTERN PROGRAM: the processes whose command line matches
# PATTERN (pgrep -f) and whose name is PROGRAM's (not dgrun, mpirun, srun...)
rank_pids() {
    local p name
    name=$(basename "$2" | cut -c1-15)
    for p in $(pgrep -f -- "$1"); do
        [ "$(cat /proc/$p/comm 2>/dev/null)" = "$name" ] && echo "$p"
    done
}
