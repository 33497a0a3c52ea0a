# Sourced by NVIDIA's /opt/nvidia/nvidia_entrypoint.sh before the container's command: each container
# gets its own ssh host keys (the image holds none), so worker nodes can run `/usr/sbin/sshd -D -e`.
# Only root can write them; a container run with --user needs no sshd.
if [ "$(id -u)" = 0 ]; then
    ssh-keygen -A >/dev/null
    # The launching node's public key, mounted at /etc/megadalle/authorized_keys (the Dockerfile's header): sshd's
    # StrictModes refuses an authorized_keys that root does not own, as a file bind-mounted from a user's home is,
    # so root gets its own copy, mode 600 (root's ~/.ssh is 700 in the image).
    if [ -f /etc/megadalle/authorized_keys ]; then
        install -d -o root -g root -m 700 /root/.ssh
        install -o root -g root -m 600 /etc/megadalle/authorized_keys /root/.ssh/authorized_keys
    fi
fi
