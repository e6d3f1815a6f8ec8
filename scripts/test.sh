#!/usr/bin/env bash
# The tests, as CI runs them (README's test command): build; the simulator's proofs; the tests that want
# the machine to themselves; then the rest in three test processes side by side.
#
# Live tests start real PostgreSQL nodes, a Consul server and monitors, and spend most of their time
# waiting for them, so three processes at once use a 2-core machine well. They are separate processes,
# not parallel tests in one: the embedded Consul server and the monitor shell's lease run inside the
# test process, and one process's blocking calls would hold up another test's server (seen: a Consul
# that did not answer for 2 s). Alone: the simulator (it keeps both cores busy), the lab (VRRP adverts
# every 100 ms, the VIP benchmarks) and the suites whose lease beats in the test process.
#
# BATON_TEST_PROCESSES=1 runs the side-by-side part one process after another.
set -euo pipefail
cd "$(dirname "$0")/.."

swift build
swift build --build-tests
swift test --skip-build --no-parallel --filter BatonSimTests
swift test --skip-build --no-parallel --filter 'LabTests|MonitorShellTests|WatchdogTests'

# Two groups of the longest live tests by name; the third process runs everything else, so a test
# added anywhere is never left out.
sync_and_bouncer='MonitorLiveTests/(flappingSynchronousStandby|crashingSynchronousStandbyThenPrimaryLoss|synchronousStandbyReplaced|unplannedFailoverIsAPause|readOnlyAliasesFollowTheNodesState|routingDisagreementIsReported|pgbouncerSwitchoverWithoutErrors|pgbouncerPrimaryRestartWithoutErrors|pgbouncerFollowsFailover|heldClientsWaitAtMostPgbouncerTimeout)\('
consul_and_safety='MonitorLiveTests/(consulTroubleIsANonEvent|failsafeRidesOutAConsulOutage|primaryPartitionedFromConsul|noPromotionWithoutConsul|consulRestart|watchdogKilled|slowSwitchoverStop|slowPromotion|monitorRestarted|agentWithoutConsulPauses|checkNeverPassesTwice|ioStall)\('
groups=(
    "--filter $sync_and_bouncer"
    "--filter $consul_and_safety"
    "--skip BatonSimTests --skip LabTests --skip MonitorShellTests --skip WatchdogTests --skip $sync_and_bouncer --skip $consul_and_safety"
)

logs=$(mktemp -d /tmp/baton-tests-XXXXXX)
trap 'rm -rf "$logs"' EXIT
statuses=()
# The test binary itself: `swift test` holds a lock on .build for as long as its tests run, so two
# of them would run one after the other.
tests="$(swift build --show-bin-path)/batonPackageTests.xctest"
run_group() {
    # shellcheck disable=SC2086  # each group is a list of flags
    NO_COLOR=1 "$tests" --testing-library swift-testing --no-parallel ${groups[$1]} >"$logs/$1.log" 2>&1
}
if [ "${BATON_TEST_PROCESSES:-3}" = 1 ]; then
    for i in "${!groups[@]}"; do
        statuses[i]=0
        run_group "$i" || statuses[i]=$?
    done
else
    pids=()
    for i in "${!groups[@]}"; do
        run_group "$i" &
        pids[i]=$!
    done
    for i in "${!groups[@]}"; do
        statuses[i]=0
        wait "${pids[i]}" || statuses[i]=$?
    done
fi
failed=0
for i in "${!groups[@]}"; do
    echo "=== test process $((i + 1)) of ${#groups[@]}: exit ${statuses[i]}"
    cat "$logs/$i.log"
    [ "${statuses[i]}" = 0 ] || failed=1
done
[ "$failed" = 0 ] && echo "=== every test process passed"
exit "$failed"
