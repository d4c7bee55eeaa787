#!/bin/bash
# glancegw demo: a real Glance, real boot ISOs from Debian packages, the
# daemon serving them as a read-only FUSE mount and as NBD exports.
#
#   make demo            (or: GLANCEGW_BIN=bin/glancegw bash test/demo.sh)
#
# Env: GLANCEGW_BIN (default bin/glancegw), DEMO_GLANCE_PORT (default 9296),
# DEMO_KEEP=1 keeps the work dir. Stops everything it started on exit and
# exits non-zero on any failure.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${GLANCEGW_BIN:-$ROOT/bin/glancegw}
PORT=${DEMO_GLANCE_PORT:-9296}
WORK=$(mktemp -d /tmp/ggw-demo.XXXXXX)
GSTATE=$WORK/glance
DPID=""
ISO_VIEW=""

section() { printf '\n\033[1m=== %s ===\033[0m\n' "$*"; }
die() { printf '\n\033[1;31mDEMO FAILED: %s\033[0m\n' "$*" >&2; exit 1; }
jget() { /usr/bin/python3 -c 'import sys,json; d=json.load(sys.stdin); print(d[sys.argv[1]] if d.get(sys.argv[1]) is not None else "")' "$1"; }

cleanup() {
	local rc=$?
	set +e
	if [ -n "$DPID" ] && kill -0 "$DPID" 2>/dev/null; then
		kill -TERM "$DPID"
		for _ in $(seq 1 100); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.1; done
		kill -KILL -- "-$DPID" 2>/dev/null
	fi
	# Anything still mounted below the work dir (e.g. after a daemon crash).
	awk -v d="$WORK/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r |
		while read -r m; do umount -l "$m" 2>/dev/null || fusermount3 -u -z "$m"; done
	[ -d "$GSTATE" ] && bash "$ROOT/test/glance/stop.sh" "$GSTATE" >/dev/null 2>&1
	if [ "${DEMO_KEEP:-0}" = 1 ] || [ "$rc" != 0 ]; then
		echo "demo: work dir kept: $WORK (daemon.log, glance logs)" >&2
		[ "$rc" != 0 ] && [ -f "$WORK/daemon.log" ] && { echo "--- daemon.log (tail)" >&2; tail -n 30 "$WORK/daemon.log" >&2; }
	else
		rm -rf --one-file-system "$WORK"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ -x "$BIN" ] || die "$BIN not built (make build)"
for t in curl qemu-img dpkg-deb apt-get fusermount3 sha512sum python3; do
	command -v "$t" >/dev/null || die "required tool $t missing (make deps)"
done
export GLANCEGW_SOCKET=$WORK/api.sock
G() { "$BIN" "$@"; }

section "1. Start a real OpenStack Glance (noauth) on 127.0.0.1:$PORT"
GLANCE_URL=$(GLANCE_PORT=$PORT bash "$ROOT/test/glance/start.sh" noauth "$GSTATE")
echo "Glance: $GLANCE_URL"
curl -sS -m 10 "$GLANCE_URL/versions" | python3 -c 'import sys,json; print("API versions:", ", ".join(v["id"] for v in json.load(sys.stdin)["versions"]))'

section "2. Fetch real boot ISOs from Debian packages (grub-rescue-pc, ipxe, memtest86+)"
mkdir -p "$WORK/debs" "$WORK/x" "$WORK/iso"
if ! (cd "$WORK/debs" && apt-get download grub-rescue-pc ipxe memtest86+ >/dev/null 2>&1); then
	echo "apt-get download failed; running apt-get update once"
	apt-get update -q >/dev/null
	(cd "$WORK/debs" && apt-get download grub-rescue-pc ipxe memtest86+ >/dev/null 2>&1) || die "apt-get download failed"
fi
for deb in "$WORK"/debs/*.deb; do dpkg-deb -x "$deb" "$WORK/x"; done
find "$WORK/x" -name '*.iso' -type f -exec cp {} "$WORK/iso/" \;
ls -l "$WORK/iso"
n_iso=$(find "$WORK/iso" -name '*.iso' | wc -l)
[ "$n_iso" -ge 3 ] || die "expected at least 3 ISO files, found $n_iso"
# A compressed qcow2 of one ISO, to show a non-raw format over NBD.
qemu-img convert -c -O qcow2 "$WORK/iso/ipxe.iso" "$WORK/iso/ipxe.qcow2"
qemu-img info "$WORK/iso/ipxe.qcow2" | sed -n '1,4p'

section "3. Upload them to Glance"
declare -A IDS
for f in "$WORK"/iso/*; do
	name=$(basename "$f")
	fmt=iso
	[ "${name##*.}" = qcow2 ] && fmt=qcow2
	id=$(curl -sS --fail -m 60 -X POST "$GLANCE_URL/v2/images" -H 'Content-Type: application/json' \
		-d "{\"name\":\"$name\",\"disk_format\":\"$fmt\",\"container_format\":\"bare\"}" | jget id)
	[ -n "$id" ] || die "creating image $name failed"
	curl -sS --fail -m 300 -X PUT "$GLANCE_URL/v2/images/$id/file" \
		-H 'Content-Type: application/octet-stream' --data-binary @"$f"
	IDS[$name]=$id
	printf '%-28s %s  %s  %9d bytes\n' "$name" "$id" "$fmt" "$(stat -c %s "$f")"
done

section "4. Start the glancegw daemon"
setsid "$BIN" serve --state-dir "$WORK/state" --mount-root "$WORK/mnt" --repo-root "$WORK/repo" \
	--nbd-socket "$WORK/nbd.sock" >"$WORK/daemon.log" 2>&1 </dev/null &
DPID=$!
for i in $(seq 1 150); do
	G status >/dev/null 2>&1 && break
	kill -0 "$DPID" 2>/dev/null || die "daemon exited during startup"
	[ "$i" = 150 ] && die "daemon did not answer within 30 s"
	sleep 0.2
done
G status

section "5. Add the Glance storage domain and mount it"
G domain add demo --url "$GLANCE_URL"
G mount demo
G domain show demo
SHOW=$(G domain show demo --json)
SD=$(echo "$SHOW" | jget uuid)
MP=$(echo "$SHOW" | jget mountpoint)
[ -n "$SD" ] && [ -n "$MP" ] || die "domain show --json lacks uuid/mountpoint: $SHOW"
grep -q " $MP " /proc/self/mountinfo || die "$MP is not mounted"
ISO_VIEW="$MP/$SD/images/11111111-1111-1111-1111-111111111111"
echo "mounted at $MP (sdUUID $SD)"

section "6. The mount, laid out like an oVirt ISO domain"
echo "\$ ls -l $ISO_VIEW"
ls -l "$ISO_VIEW"
echo "\$ ls -l $MP/by-id"
ls -l "$MP/by-id"
echo "\$ ls -l $MP/by-name"
ls -l "$MP/by-name"
echo "\$ cat $MP/$SD/dom_md/metadata"
cat "$MP/$SD/dom_md/metadata"

section "7. glancegw image list demo"
G image list demo

section "8. Every mounted file: sha512sum equals Glance's os_hash_value"
bad=0
for name in "${!IDS[@]}"; do
	id=${IDS[$name]}
	want=$(curl -sS --fail -m 30 "$GLANCE_URL/v2/images/$id" | jget os_hash_value)
	for f in "$ISO_VIEW/$name" "$MP/by-id/$id"; do
		got=$(sha512sum <"$f" | cut -d' ' -f1)
		if [ "$got" = "$want" ] && [ -n "$want" ]; then
			printf 'OK        %s  %.32s...\n' "${f#"$MP"/}" "$got"
		else
			printf 'MISMATCH  %s\n  mount: %s\n  glance: %s\n' "${f#"$MP"/}" "$got" "$want"
			bad=$((bad + 1))
		fi
	done
done
[ "$bad" = 0 ] || die "$bad file(s) differ from what Glance stores"

section "9. NBD: every image is an export"
G nbd list
QID=${IDS[ipxe.qcow2]}
URI="nbd+unix:///$SD/$QID?socket=$WORK/nbd.sock"
echo "\$ qemu-img info '$URI'"
qemu-img info -f qcow2 "$URI"
echo "\$ qemu-img compare (qcow2 over NBD vs the local qcow2)"
qemu-img compare -f qcow2 -F qcow2 "$URI" "$WORK/iso/ipxe.qcow2" || die "qcow2 over NBD differs from the local file"
if command -v nbdinfo >/dev/null; then
	echo "\$ nbdinfo --map (memtest86+x64.iso)"
	nbdinfo --map "nbd+unix:///$SD/${IDS[memtest86+x64.iso]}?socket=$WORK/nbd.sock"
fi

section "10. Stop the daemon (SIGTERM): it unmounts and exits 0"
kill -TERM "$DPID"
rc=""
for _ in $(seq 1 300); do
	if ! kill -0 "$DPID" 2>/dev/null; then
		wait "$DPID" && rc=0 || rc=$?
		break
	fi
	sleep 0.1
done
[ -n "$rc" ] || die "daemon still running 30 s after SIGTERM"
DPID=""
echo "daemon exit code: $rc"
[ "$rc" = 0 ] || die "daemon exited with $rc"
if grep -q " $MP " /proc/self/mountinfo; then die "$MP still mounted after SIGTERM"; fi
echo "$MP is no longer mounted (/proc/self/mountinfo)"

section "11. Stop Glance"
bash "$ROOT/test/glance/stop.sh" "$GSTATE"
printf '\n\033[1;32mdemo: OK\033[0m\n'
