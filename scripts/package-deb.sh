#!/usr/bin/env bash
# Builds Baton's Debian package: release binaries with the Swift runtime linked in statically (they run
# on a machine without Swift), the templates, the systemd units, the man pages and README, in
# dist/baton_<version>_<arch>.deb. Needs swift, dpkg-deb; no root.
#
#   scripts/package-deb.sh [--skip-build]      --skip-build packages the last release build again
#
# Installed: /usr/bin/baton, /usr/bin/baton-watchdog (the monitor starts it from beside itself),
# /usr/share/baton/{keepalived,pgbouncer}/ (bootstrap's templates), /lib/systemd/system/baton-*.service
# and a keepalived drop-in, /usr/share/man/man1/baton*.1, /usr/share/doc/baton/. Nothing under /etc or
# /var/lib: `dpkg -r baton` leaves configuration and data alone (and stops no running daemon).
set -euo pipefail
cd "$(dirname "$0")/.."
skip_build=false
for arg in "$@"; do
  case "$arg" in
    --skip-build) skip_build=true ;;
    *) echo "package-deb: unknown argument $arg (usage: scripts/package-deb.sh [--skip-build])" >&2; exit 2 ;;
  esac
done
command -v dpkg-deb >/dev/null || { echo "package-deb: needs dpkg-deb (apt-get install dpkg)" >&2; exit 2; }

version=$(sed -n 's/.*version: "\([0-9][0-9.]*\)".*/\1/p' Sources/baton/Baton.swift | head -1)
[ -n "$version" ] || { echo "package-deb: cannot find the version in Sources/baton/Baton.swift" >&2; exit 2; }
arch=$(dpkg --print-architecture)
flags=(-c release --static-swift-stdlib)
if ! $skip_build; then
  echo "package-deb: building baton $version (release, static Swift runtime)…"
  swift build "${flags[@]}" --product baton
  swift build "${flags[@]}" --product baton-watchdog
fi
bin=$(swift build "${flags[@]}" --show-bin-path)
for exe in baton baton-watchdog; do
  [ -x "$bin/$exe" ] || { echo "package-deb: $bin/$exe is missing; run without --skip-build" >&2; exit 2; }
  # The whole point: nothing may come from the toolchain at run time (only Debian's libraries).
  if ldd "$bin/$exe" | grep -q -e 'libswift' -e 'libFoundation' -e 'lib_Foundation' -e 'libdispatch' -e 'libBlocksRuntime'; then
    echo "package-deb: $exe still links Swift's shared libraries:" >&2
    ldd "$bin/$exe" | grep -e swift -e Foundation -e dispatch -e Blocks >&2
    exit 1
  fi
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/baton_${version}_$arch
install -d "$root/DEBIAN" "$root/usr/bin" "$root/usr/share/baton" "$root/lib/systemd/system" \
  "$root/lib/systemd/system/keepalived.service.d" "$root/usr/share/doc/baton" "$root/usr/share/man/man1"
install -m 0755 -s "$bin/baton" "$bin/baton-watchdog" "$root/usr/bin/"
cp -r keepalived pgbouncer "$root/usr/share/baton/"
install -m 0644 Deploy/baton-monitor.service Deploy/baton-pgbouncer-agent.service Deploy/baton-consul.service \
  "$root/lib/systemd/system/"
install -m 0644 Deploy/keepalived.service.d/baton.conf "$root/lib/systemd/system/keepalived.service.d/"
install -m 0644 Deploy/consul.service "$root/usr/share/doc/baton/consul.service.example"
# Alerting rules for Prometheus and a Grafana dashboard (docs/api.md).
install -d "$root/usr/share/baton/prometheus" "$root/usr/share/baton/grafana"
install -m 0644 Deploy/prometheus/baton-alerts.yml Deploy/prometheus/baton-alerts.test.yml "$root/usr/share/baton/prometheus/"
install -m 0644 Deploy/grafana/baton-dashboard.json "$root/usr/share/baton/grafana/"
install -d "$root/usr/share/doc/baton/docs"
install -m 0644 README.md "$root/usr/share/doc/baton/"
install -m 0644 docs/*.md docs/*.png "$root/usr/share/doc/baton/docs/"
gzip -9n -c > "$root/usr/share/doc/baton/changelog.Debian.gz" <<CHANGES
baton ($version) unstable; urgency=medium

  * Built from $(git rev-parse --short HEAD 2>/dev/null || echo "a source tree").

 -- Baton maintainers <baton@localhost>  $(date -R)
CHANGES

# Man pages, one per command, from the commands' own help (swift-argument-parser's dump).
"$bin/baton" --experimental-dump-help >"$work/help.json"
/usr/bin/python3 scripts/manpages.py "$work/help.json" "$version" "$root/usr/share/man/man1"
gzip -9n "$root"/usr/share/man/man1/*.1

# Depends: the Debian package of every shared library the binaries load (what dpkg-shlibdeps would say).
depends=$(for lib in $(objdump -p "$bin/baton" "$bin/baton-watchdog" | awk '/NEEDED/ {print $2}' | sort -u); do
  path=$(ldconfig -p | awk -v l="$lib" '$1 == l {print $NF; exit}')
  [ -n "$path" ] || { echo "package-deb: $lib is not installed here" >&2; exit 1; }
  (dpkg -S "$path" 2>/dev/null || dpkg -S "$(readlink -f "$path")") | head -1 | cut -d: -f1
done | sort -u | paste -sd, | sed 's/,/, /g')
size=$(du -sk "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<CONTROL
Package: baton
Version: $version
Architecture: $arch
Maintainer: Baton maintainers <baton@localhost>
Installed-Size: $size
Depends: $depends
Recommends: postgresql-15 | postgresql, keepalived, pgbouncer
Suggests: haproxy, pgbackrest
Section: database
Priority: optional
Homepage: https://github.com/baton-ha/baton
Description: PostgreSQL high availability: one writable primary, and a baton passed on
 Baton keeps one writable PostgreSQL primary per cluster and passes the leader lock in Consul, the
 keepalived virtual IP and every pgbouncer's target to a replica when the primary fails or an
 operator asks for a switchover. It fences a primary before anyone else may take over, and in
 synchronous mode never loses an acknowledged commit.
CONTROL
cat >"$root/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null || true
fi
POSTINST
cat >"$root/DEBIAN/postrm" <<'POSTRM'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null || true
fi
POSTRM
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/postrm"

mkdir -p dist
dpkg-deb --root-owner-group --build "$root" "dist/baton_${version}_$arch.deb" >/dev/null
echo "package-deb: dist/baton_${version}_$arch.deb"
dpkg-deb --info "dist/baton_${version}_$arch.deb" | sed -n 's/^ *\(Package\|Version\|Depends\|Recommends\|Installed-Size\):/  &/p'
