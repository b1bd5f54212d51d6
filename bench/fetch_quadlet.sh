#!/bin/sh
# Podman's Quadlet generator, for bench/run.py to compare against.  Debian 12's podman
# has none; Debian 13's has, and its binary needs only libc.  apt fetches the package
# (InRelease signature and package hash checked against the archive keyring) into a
# private state directory: the machine's own apt configuration is not touched.
# Usage: bench/fetch_quadlet.sh [DIR]   (default bench/.cache/quadlet); prints the path.
set -eu
dir=$(realpath -m "${1:-$(dirname "$0")/.cache/quadlet}")
bin="$dir/root/usr/libexec/podman/quadlet"
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi
mkdir -p "$dir/lists/partial" "$dir/archives/partial" "$dir/cache"
cat > "$dir/trixie.sources" <<SOURCES
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
set -- -q -o Dir::Etc::SourceList="$dir/trixie.sources" -o Dir::Etc::SourceParts=/dev/null \
    -o Dir::State::Lists="$dir/lists" -o Dir::Cache="$dir/cache" \
    -o Dir::Cache::Archives="$dir/archives" -o APT::Sandbox::User=root
apt-get "$@" update >&2
(cd "$dir" && apt-get "$@" download podman >&2)
dpkg-deb -x "$dir"/podman_*.deb "$dir/root"
"$bin" -version >&2
echo "$bin"
