#!/usr/bin/env bash
# The deterministic simulator: Baton's rules (BatonCore) over simulated PostgreSQL nodes and the
# embedded Consul server's own store, in virtual time, with faults drawn by each seed and every
# invariant checked after every step. Needs neither root nor PostgreSQL.
#
#   scripts/sim.sh [--seeds N] [--from S] [--nodes 3..5] [--sync off|on|strict] [--faults N]
#                  [--kinds KIND,…] [--mutant RULE] [--workers N]
#   scripts/sim.sh --replay SEED [same options]   # one seed, its whole trace (virtual seconds)
#
# Prints each violation (seed, invariant, the end of its trace, the replay command), then a summary:
# seeds, seeds/s, faults, steps, promotions, acknowledged commits, violations by invariant.
# Exit status 1 when an invariant was broken, 2 on bad options.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product baton-sim >/dev/null
exec "$(swift build -c release --show-bin-path)/baton-sim" "$@"
