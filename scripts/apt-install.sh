# Sourced by the ci-install-*.sh scripts: one way to install Debian packages on a CI machine
# or container (root, or sudo), with apt-get retried (mirrors fail now and then) and bounded.
#
#   apt_install NAME [apt-get install options...] -- PACKAGE...
#
# NAME prefixes the messages. Exits the script with 1 when it cannot install.

apt_install() {
    local name=$1
    shift
    local opts=()
    while (($#)) && [[ $1 != -- ]]; do opts+=("$1"); shift; done
    shift  # --
    local sudo=()
    if [[ "$(id -u)" != 0 ]]; then
        command -v sudo >/dev/null 2>&1 || { echo "$name: need root or sudo" >&2; exit 1; }
        sudo=(sudo -E)
    fi
    export DEBIAN_FRONTEND=noninteractive
    local attempt
    for attempt in 1 2 3; do
        if timeout 300 "${sudo[@]}" apt-get update -q &&
            timeout 900 "${sudo[@]}" apt-get install -y -q "${opts[@]}" "$@"; then
            return 0
        fi
        if ((attempt == 3)); then
            echo "$name: apt-get failed 3 times" >&2
            exit 1
        fi
        echo "$name: apt-get failed (attempt $attempt); retrying in $((attempt * 10)) s" >&2
        sleep $((attempt * 10))
    done
}
