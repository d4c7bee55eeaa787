#!/bin/bash
# Restart glance-api from a state dir made by start.sh WITHOUT wiping its db
# or images (start.sh wipes them on every fresh start). Keystone, if any, is
# left alone. Used by the fault tests: "Glance killed/hung during a read,
# then restarted, reads work again".
#
# Usage: restart.sh [STATE_DIR]
#   GLANCE_STATE_DIR       state dir (or 1st argument); default ${TMPDIR:-/tmp}/glance-test
#   GLANCE_START_TIMEOUT   seconds to wait for /versions (default 120)
# Prints the glance URL on stdout on success.
set -euo pipefail

STATE=${1:-${GLANCE_STATE_DIR:-${TMPDIR:-/tmp}/glance-test}}
TIMEOUT=${GLANCE_START_TIMEOUT:-120}
MARKER=.glance-test-state

log() { echo "restart.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ -d "$STATE" ] || die "$STATE does not exist (run start.sh first)"
STATE=$(cd "$STATE" && pwd)
[ -e "$STATE/$MARKER" ] || die "$STATE was not made by start.sh; not touching it"
[ -f "$STATE/glance-api.conf" ] && [ -f "$STATE/env.sh" ] ||
	die "$STATE has no glance-api.conf/env.sh (start.sh never finished there)"
GLANCE_URL=$(sed -n 's/^export GLANCE_URL=//p' "$STATE/env.sh")
[ -n "$GLANCE_URL" ] || die "no GLANCE_URL in $STATE/env.sh"

group_alive() { kill -0 -- "-$1" 2>/dev/null; }
wait_gone() { # tenths pgid
	for _ in $(seq 1 "$1"); do
		group_alive "$2" || return 0
		sleep 0.1
	done
	return 1
}
http_ok() { curl -s -o /dev/null -m 3 -w '%{http_code}' "$1" 2>/dev/null | grep -q '^[23]'; }

# Stop the old glance-api group, if any (it may be SIGSTOPped: CONT first so
# TERM is delivered, KILL if it does not go).
pid=$(cat "$STATE/glance-api.pid" 2>/dev/null || true)
case "$pid" in '' | *[!0-9]*) pid="" ;; esac
if [ -n "$pid" ] && group_alive "$pid"; then
	if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q glance-api ||
		! kill -0 "$pid" 2>/dev/null; then
		log "stopping old glance-api group $pid"
		kill -CONT -- "-$pid" 2>/dev/null || true
		kill -TERM -- "-$pid" 2>/dev/null || true
		if ! wait_gone 50 "$pid"; then
			kill -KILL -- "-$pid" 2>/dev/null || true
			wait_gone 50 "$pid" || die "old glance-api group $pid does not go away"
		fi
	else
		log "pid $pid is no longer glance-api; leaving it alone"
	fi
fi
rm -f "$STATE/glance-api.pid"

log "starting glance-api on $GLANCE_URL (state kept)"
PYTHONPATH="$STATE/py${PYTHONPATH:+:$PYTHONPATH}" \
	setsid glance-api --config-file "$STATE/glance-api.conf" >>"$STATE/glance-api.log" 2>&1 </dev/null &
new=$!
echo "$new" >"$STATE/glance-api.pid"

end=$((SECONDS + TIMEOUT))
while [ $SECONDS -lt $end ]; do
	if ! kill -0 "$new" 2>/dev/null; then
		log "glance-api (pid $new) died during restart; log tail:"
		tail -n 30 "$STATE/glance-api.log" >&2 || true
		rm -f "$STATE/glance-api.pid"
		exit 1
	fi
	if http_ok "$GLANCE_URL/versions"; then
		log "ready (pid $new)"
		echo "$GLANCE_URL"
		exit 0
	fi
	sleep 0.2
done
log "glance-api did not answer within ${TIMEOUT}s; stopping it"
kill -KILL -- "-$new" 2>/dev/null || true
rm -f "$STATE/glance-api.pid"
exit 1
