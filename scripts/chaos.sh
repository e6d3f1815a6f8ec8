#!/usr/bin/env bash
# The chaos suite: random faults in the namespace lab (scripts/lab.sh), a workload that records every
# acknowledged write, and a history check — never two writable primaries, never a lost acknowledged
# commit in synchronous mode, convergence within 60 s after each fault — with a report that the same
# seed replays. Needs root (network namespaces); re-runs itself with sudo when it is not root.
#
#   scripts/chaos.sh [--faults N] [--seed S] [--sync on|off] [--nodes 3] [--report FILE.json]
#                    [--only KIND,KIND…]   (draw only these kinds, e.g. freeze-node,consul-cut; --plan lists)
#
# Prints one line per fault, then a table per fault kind; writes FILE.json and FILE.md (default
# chaos-report.json / .md). Exit status 1 when an invariant was violated, 2 when the run itself failed.
# The lab (BATON_CHAOS_LAB_DIR, default /tmp/baton-chaos-lab) is torn down on every exit.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "chaos: needs root (network namespaces), and sudo is not installed" >&2; exit 2; }
  exec sudo -E "$0" "$@"
fi
swift build --product baton >/dev/null
swift build --product baton-watchdog >/dev/null
swift build --product baton-chaos >/dev/null
bin=$(swift build --show-bin-path)
exec "$bin/baton-chaos" --lab-script "$PWD/scripts/lab.sh" --lab-dir "${BATON_CHAOS_LAB_DIR:-/tmp/baton-chaos-lab}" "$@"
