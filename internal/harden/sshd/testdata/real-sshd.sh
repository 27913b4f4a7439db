#!/usr/bin/env bash
# Runs TestRealSSHD against the real OpenSSH of a Debian 12 root (the lab's
# cached base image) without changing it: in a private mount and network
# namespace, /etc/ssh, /etc/passwd, /home, /root, /tmp and /run are replaced
# by writable copies, host keys and an admin user with a key are added, and
# the test writes its drop-in there, runs sshd -t, audits sshd -T, and logs
# in to that sshd on the namespace's loopback.
#
#   go test -c -o /tmp/sshd.test ./internal/harden/sshd
#   unshare -m -n --propagation private bash internal/harden/sshd/testdata/real-sshd.sh \
#       /var/cache/tandem/lab/bookworm-XXXX /tmp/sshd.test
set -euo pipefail
img=${1:?usage: real-sshd.sh DEBIAN_ROOT TEST_BINARY}
bin=${2:?usage: real-sshd.sh DEBIAN_ROOT TEST_BINARY}
work=$(mktemp -d)
# Never let rm cross into a mount (nothing is mounted under $work, but a
# removal that followed a bind mount would delete the host's files).
trap 'rm -rf --one-file-system "$work"' EXIT
mount -t tmpfs none "$img/tmp"
mount -t tmpfs none "$img/run"
mkdir -p "$img/run/sshd"
cp -a "$img/etc/ssh" "$work/ssh"
mount --bind "$work/ssh" "$img/etc/ssh"
ssh-keygen -q -t ed25519 -N '' -f "$img/etc/ssh/ssh_host_ed25519_key"
ssh-keygen -q -t rsa -b 3072 -N '' -f "$img/etc/ssh/ssh_host_rsa_key"
ssh-keygen -q -t ecdsa -N '' -f "$img/etc/ssh/ssh_host_ecdsa_key"
cp "$img/etc/passwd" "$work/passwd"
echo 'admin:x:1000:1000:Admin:/home/admin:/bin/bash' >>"$work/passwd"
mount --bind "$work/passwd" "$img/etc/passwd"
# '*': no password, but a valid account (PAM's account check lets key logins in)
cp "$img/etc/shadow" "$work/shadow"
echo 'admin:*:20000:0:99999:7:::' >>"$work/shadow"
mount --bind "$work/shadow" "$img/etc/shadow"
mount -t tmpfs none "$img/home"
mkdir -p "$img/home/admin/.ssh"
ssh-keygen -q -t ed25519 -N '' -f "$work/adminkey"
cp "$work/adminkey.pub" "$img/home/admin/.ssh/authorized_keys"
chown -R 1000:1000 "$img/home/admin"
mount -t tmpfs -o mode=0700 none "$img/root"
mkdir -p "$img/root/.ssh"
cp "$work/adminkey.pub" "$img/root/.ssh/authorized_keys"
ip link set lo up
TANDEM_SSHD_ROOT=$img TANDEM_SSHD_KEY=$work/adminkey "$bin" -test.run '^TestRealSSHD$' -test.v
