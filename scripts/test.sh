#!/usr/bin/env bash
# The tests, as CI runs them (README's test command): build; then the simulator's proofs in the CPU time
# the live tests leave idle, beside the live tests in two steps: the lab beside the monitor shell and
# the watchdog, then the rest of the live tests in three test processes side by side.
#
# Live tests start real PostgreSQL nodes, a Consul server and monitors, and spend most of their time
# waiting for them, so several processes at once use a 2-core machine well. They are separate
# processes, not parallel tests in one: the embedded Consul server and the monitor shell's lease run
# inside the test process, and one process's blocking calls would hold up another test's server (seen:
# a Consul that did not answer for 2 s). The simulator keeps every core busy, so it runs as an idle
# task (SCHED_IDLE): a live test's process that wakes takes the CPU from it at once.
#
# BATON_TEST_PROCESSES=1 runs everything one process after another (the simulator first).
set -euo pipefail
cd "$(dirname "$0")/.."

swift build
swift build --build-tests

# Two groups of the longest live tests by name; the third process runs everything else, so a test
# added anywhere is never left out.
sync_and_bouncer='MonitorLiveTests/(flappingSynchronousStandby|crashingSynchronousStandbyThenPrimaryLoss|synchronousStandbyReplaced|unplannedFailoverIsAPause|readOnlyAliasesFollowTheNodesState|routingDisagreementIsReported|pgbouncerSwitchoverWithoutErrors|pgbouncerPrimaryRestartWithoutErrors|pgbouncerFollowsFailover|heldClientsWaitAtMostPgbouncerTimeout)\(|BackupLiveTests/replicaFromBackup\('
consul_and_safety='MonitorLiveTests/(consulTroubleIsANonEvent|failsafeRidesOutAConsulOutage|primaryPartitionedFromConsul|noPromotionWithoutConsul|consulRestart|watchdogKilled|slowSwitchoverStop|slowPromotion|monitorRestarted|agentWithoutConsulPauses|checkNeverPassesTwice|ioStall)\('
simulator="--filter BatonSimTests"
# Step one: the lab (VRRP adverts every 100 ms, the VIP's benchmarks) beside the suites whose lease
# beats in the test process and the day-2 and bootstrap suites (about as long together as the lab);
# step two: the rest.
beside_the_lab='MonitorShellTests|WatchdogTests|DayTwoLiveTests|BootstrapLiveTests'
step_one=("--filter LabTests" "--filter $beside_the_lab")
step_two=(
    "--filter $sync_and_bouncer"
    "--filter $consul_and_safety"
    "--skip BatonSimTests --skip LabTests --skip $beside_the_lab --skip $sync_and_bouncer --skip $consul_and_safety"
)
groups=("$simulator" "${step_one[@]}" "${step_two[@]}")

logs=$(mktemp -d /tmp/baton-tests-XXXXXX)
trap 'rm -rf "$logs"' EXIT
statuses=()
# The test binary itself: `swift test` holds a lock on .build for as long as its tests run, so two
# of them would run one after the other.
tests="$(swift build --show-bin-path)/batonPackageTests.xctest"
run_group() {
    local idle=()
    [ "$1" != 0 ] || idle=(chrt --idle 0)
    # shellcheck disable=SC2086  # each group is a list of flags
    NO_COLOR=1 "${idle[@]}" "$tests" --testing-library swift-testing --no-parallel ${groups[$1]} >"$logs/$1.log" 2>&1
}
if [ "${BATON_TEST_PROCESSES:-}" = 1 ]; then
    for i in "${!groups[@]}"; do
        statuses[i]=0
        run_group "$i" || statuses[i]=$?
    done
else
    # Group 0 is the simulator, idle-scheduled; then step one's groups, then step two's.
    started=$SECONDS
    run_group 0 &
    simulator_pid=$!
    run_step() {
        local pids=() i
        for i in "$@"; do
            run_group "$i" &
            pids[i]=$!
        done
        for i in "$@"; do
            statuses[i]=0
            wait "${pids[i]}" || statuses[i]=$?
        done
    }
    run_step 1 2
    echo "=== step one (the lab; the monitor shell, the watchdog, day-2, bootstrap) over after $((SECONDS - started)) s"
    run_step 3 4 5
    echo "=== step two (the other live tests) over after $((SECONDS - started)) s"
    statuses[0]=0
    wait "$simulator_pid" || statuses[0]=$?
    echo "=== the simulator over after $((SECONDS - started)) s"
fi
failed=0
for i in "${!groups[@]}"; do
    echo "=== test process $((i + 1)) of ${#groups[@]}: exit ${statuses[i]}"
    cat "$logs/$i.log"
    [ "${statuses[i]}" = 0 ] || failed=1
done
[ "$failed" = 0 ] && echo "=== every test process passed"
exit "$failed"
