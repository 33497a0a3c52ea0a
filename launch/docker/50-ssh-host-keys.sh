# Sourced by NVIDIA's /opt/nvidia/nvidia_entrypoint.sh before the container's command: each container
# gets its own ssh host keys (the image holds none), so worker nodes can run `/usr/sbin/sshd -D -e`.
# Only root can write them; a container run with --user needs no sshd.
if [ "$(id -u)" = 0 ]; then
    ssh-keygen -A >/dev/null
fi
