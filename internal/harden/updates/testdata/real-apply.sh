#!/usr/bin/env bash
# Runs TestRealApply on an overlay over a Debian 12 root (the lab's cached
# base image), in a private mount namespace, so the image never changes:
#
#   go test -c -o /tmp/updates.test ./internal/harden/updates
#   unshare -m --propagation private bash internal/harden/updates/testdata/real-apply.sh \
#       /var/cache/tandem/lab/bookworm-XXXX /tmp/updates.test
set -euo pipefail
img=${1:?usage: real-apply.sh DEBIAN_ROOT TEST_BINARY}
bin=${2:?usage: real-apply.sh DEBIAN_ROOT TEST_BINARY}
work=$(mktemp -d)
# Unmount before removing, and never let rm cross into a mount: a removal
# that followed a bind mount would delete the host's files.
trap 'umount -R "$work/root" 2>/dev/null; rm -rf --one-file-system "$work"' EXIT
mkdir -p "$work/up" "$work/wk" "$work/root"
mount -t overlay overlay -o "lowerdir=$img,upperdir=$work/up,workdir=$work/wk" "$work/root"
mount -t proc proc "$work/root/proc"
# A /dev of its own with the few nodes apt and dpkg use; never the host's.
mount -t tmpfs -o mode=0755 none "$work/root/dev"
for n in null:3 zero:5 full:7 random:8 urandom:9; do
	mknod -m 666 "$work/root/dev/${n%:*}" c 1 "${n#*:}"
done
ln -s /proc/self/fd "$work/root/dev/fd"
mount -t tmpfs none "$work/root/run"
mount -t tmpfs none "$work/root/tmp"
cp /etc/resolv.conf "$work/root/etc/resolv.conf"
TANDEM_UPDATES_APPLY_ROOT=$work/root "$bin" -test.run '^TestRealApply$' -test.v
