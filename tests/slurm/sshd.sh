#!/bin/bash
# sshd on localhost for the multi-node launcher test: `sshd.sh start DIR PORT` / `sshd.sh stop DIR`.
#
# Installs openssh-server and pdsh when missing (root, apt), makes a host key and a client key in
# DIR, starts sshd on 127.0.0.1:PORT admitting only that key, and writes DIR/ssh_config in which the
# aliases node-a and node-b both reach it: a hostfile naming both is two "nodes" on this machine.
# Nothing outside DIR is changed (pdsh's ssh is pointed at DIR/ssh_config with -F). Exit status 77,
# with one line on stderr, means this machine cannot do it (not root, no apt, sshd would not start).
set -euo pipefail
usage="usage: sshd.sh start DIR PORT | sshd.sh stop DIR"
action=${1:?$usage}
dir=$(realpath -m "${2:?$usage}")

cannot() {
    echo "cannot run sshd here: $*" >&2
    exit 77
}

install_if_missing() {
    if [ -x /usr/sbin/sshd ] && command -v ssh >/dev/null && command -v pdsh >/dev/null; then
        return
    fi
    [ "$(id -u)" = 0 ] || cannot "openssh-server and pdsh are not installed and installing them needs root"
    command -v apt-get >/dev/null || cannot "openssh-server and pdsh are not installed and there is no apt-get"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -q && apt-get install -y -q --no-install-recommends openssh-server openssh-client pdsh; } >&2 \
        || cannot "apt-get install openssh-server pdsh failed (no package mirror reachable?)"
}

start() {
    local port=${3:?$usage}
    [ "$(id -u)" = 0 ] || cannot "sshd must run as root to log in as another session of this user"
    install_if_missing
    mkdir -p "$dir" /run/sshd
    ssh-keygen -q -t ed25519 -N "" -f "$dir/host_key" <<<y >/dev/null
    ssh-keygen -q -t ed25519 -N "" -f "$dir/client_key" <<<y >/dev/null
    cp "$dir/client_key.pub" "$dir/authorized_keys"
    cat > "$dir/sshd_config" <<CONF
ListenAddress 127.0.0.1
Port $port
HostKey $dir/host_key
PidFile $dir/sshd.pid
AuthorizedKeysFile $dir/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
CONF
    cat > "$dir/ssh_config" <<CONF
Host node-a node-b
    HostName 127.0.0.1
    Port $port
    IdentityFile $dir/client_key
    IdentitiesOnly yes
    StrictHostKeyChecking no
    UserKnownHostsFile /dev/null
    LogLevel ERROR
CONF
    /usr/sbin/sshd -f "$dir/sshd_config" -E "$dir/sshd.log" || cannot "sshd did not start; see $dir/sshd.log"
    for _ in $(seq 50); do
        if ssh -F "$dir/ssh_config" -o BatchMode=yes node-a true 2>/dev/null; then
            return
        fi
        sleep 0.2
    done
    cannot "ssh to 127.0.0.1:$port with the generated key failed; see $dir/sshd.log"
}

stop() {
    if [ -f "$dir/sshd.pid" ]; then
        kill "$(cat "$dir/sshd.pid")" 2>/dev/null || true
    fi
}

case $action in
    start) start "$@" ;;
    stop) stop ;;
    *) echo "$usage" >&2; exit 2 ;;
esac
