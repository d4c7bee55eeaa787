#!/bin/bash
# Install the Debian packages the tests and the demo need, idempotently:
# nothing happens when all are installed; `apt-get update` runs at most once,
# and only when a package has no install candidate (fresh machine, no lists).
#
# Usage: apt-deps.sh PKG... [-- OPTIONAL_PKG...]
# Optional packages are installed only if apt knows them (e.g.
# nbdkit-plugin-curl, which Debian 12 folds into nbdkit).
set -euo pipefail

required=()
optional=()
target=required
for a in "$@"; do
	if [ "$a" = -- ]; then
		target=optional
		continue
	fi
	if [ "$target" = required ]; then required+=("$a"); else optional+=("$a"); fi
done

installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]; }
candidate() { apt-cache policy "$1" 2>/dev/null | grep -q 'Candidate: [0-9]'; }

missing=()
for p in "${required[@]}"; do installed "$p" || missing+=("$p"); done
opt_missing=()
for p in "${optional[@]}"; do
	installed "$p" && continue
	if candidate "$p"; then opt_missing+=("$p"); else echo "apt-deps: optional $p not available here; skipping"; fi
done
if [ ${#missing[@]} -eq 0 ] && [ ${#opt_missing[@]} -eq 0 ]; then
	echo "apt-deps: all installed"
	exit 0
fi
if [ "$(id -u)" != 0 ]; then
	echo "apt-deps: missing packages ${missing[*]} ${opt_missing[*]}; run as root (make deps)" >&2
	exit 1
fi

updated=0
for p in "${missing[@]}"; do
	if ! candidate "$p"; then
		echo "apt-deps: $p has no candidate; running apt-get update"
		apt-get update -q
		updated=1
		break
	fi
done
want=("${missing[@]}" "${opt_missing[@]}")
echo "apt-deps: installing ${want[*]}"
export DEBIAN_FRONTEND=noninteractive
APT=(apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300)
if ! "${APT[@]}" "${want[@]}"; then
	[ "$updated" = 1 ] && exit 1
	apt-get update -q
	"${APT[@]}" "${want[@]}"
fi
