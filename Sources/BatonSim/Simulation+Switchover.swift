import BatonCore
import ConsulAPI

/// A planned switchover on a simulated leader: ``StepDown``'s steps carried out as `MonitorLoop.stepDown`
/// carries them out, each taking virtual time (drawn by the seed), so that faults, heartbeats and the
/// other monitors' loops fall between them. The monitor's loop waits meanwhile, as the live one does
/// while it carries the step-down out; the lease beats on.
extension Simulation {
    /// A step-down under way on one node: the machine, the step being carried out, and what the clean
    /// stop left (the history the old primary had, the standbys that received its shutdown checkpoint).
    struct SteppingDown {
        var machine: StepDown
        var step: StepDown.Step
        var history: [UInt64] = []
        var stoppedClean = false
        var receivedCheckpoint: Set<Int> = []
        /// The pgbouncers' pause this step-down asked for, and until when it waits for them.
        var pause: (request: PauseRequest, deadline: Duration)?
    }

    /// How often the stepping-down leader looks at the agents' acknowledgements (as `awaitBouncers`).
    static let bouncerPoll: Duration = .milliseconds(20)

    /// How long the final WAL takes to reach the target once the stop is clean; a target that did not
    /// receive it is polled for this long before the switchover is called off.
    static let targetPollBound: Duration = .seconds(5)

    /// Starts the step-down for `target` (the leader's decision ``MonitorAction/stepDown(to:)``).
    func beginStepDown(_ i: Int, to target: NodeName, snapshot: ClusterSnapshot?) {
        guard let snapshot, let request = snapshot.request?.request, snapshot.registrations[target] != nil else { return }
        var machine = StepDown(target: target, request: request, requestIndex: snapshot.request?.modifyIndex)
        let step = machine.next(after: .start)
        nodes[i].steppingDown = SteppingDown(machine: machine, step: step)
        carryOutStepDown(i)
    }

    /// Carries out the step under way and schedules its answer for when the step is over.
    func carryOutStepDown(_ i: Int) {
        guard var stepping = nodes[i].steppingDown else { return }
        let me = nodes[i].name
        let took: Duration
        switch stepping.step {
        case .checkpoint:
            took = random.duration(.milliseconds(10), .milliseconds(200))
        case .pauseBouncers where !options.bouncers:
            took = random.duration(.milliseconds(1), .milliseconds(20))
        case .pauseBouncers:
            // `MonitorLoop.stepDown`: the request written, then the agents' acknowledgements awaited.
            if stepping.pause == nil {
                pauses += 1
                let pause = PauseRequest(
                    id: "sim-\(pauses)", from: me, to: stepping.machine.target,
                    timeout: GoDuration(nanoseconds: nodes[i].config.pgbouncerTimeout.nanoseconds + 60_000_000_000))
                guard reachesConsul(i), (try? consul.put(keys.pgbouncerPause, pause.json.serializedBytes(), now: tick())) == true else {
                    // The live monitor's write throws: the step-down ends there, PostgreSQL untouched.
                    nodes[i].steppingDown = nil
                    note("\(me) could not ask the pgbouncers to pause: no switchover")
                    return
                }
                stepping.pause = (pause, now + nodes[i].config.pgbouncerTimeout.swiftDuration)
                // Only the switchover's own fault may be under way for (h) to hold it to account.
                let sound = nodes.indices.filter { n in nodes[n].bouncer.paused || nodes[n].bouncer.target.map(isWritable) == true }
                bouncerPause = (now, activeFaults.values.contains { $0 != .switchover }, Set(sound))
                wakeAgents()
            }
            took = Self.bouncerPoll
        case .stopCleanly:
            setWritablePrimary(i, false)
            // A fast shutdown: no commit after it starts; the walsenders ship every record, the shutdown
            // checkpoint last, to the standbys streaming now.
            stepping.stoppedClean = nodes[i].db.answers(at: now)
            if stepping.stoppedClean {
                stepping.history = nodes[i].db.wal
                for s in nodes.indices where s != i && streams(s) && nodes[s].db.upstream == me && !nodes[s].db.receiverFrozen {
                    nodes[s].db.wal = nodes[i].db.wal
                    stepping.receivedCheckpoint.insert(s)
                }
            }
            nodes[i].db.stop()
            took = random.duration(.milliseconds(50), .milliseconds(600))
        case .readTargetPosition:
            took = targetReceivedCheckpoint(stepping) ? random.duration(.milliseconds(5), .milliseconds(100)) : Self.targetPollBound
        case .markHandedOver, .proveLock, .startAgain, .followTarget, .done:
            took = .zero
        }
        nodes[i].steppingDown = stepping
        if took == .zero { return answerStepDown(i) }
        schedule(after: took, .stepDown(i, generation: nodes[i].generation))
    }

    /// The step under way is over: its answer to the machine, and the next step carried out.
    func answerStepDown(_ i: Int) {
        guard var stepping = nodes[i].steppingDown else { return }
        let me = nodes[i].name
        let event: StepDown.Event
        switch stepping.step {
        case .checkpoint:
            event = .checkpointed
        case .pauseBouncers where !options.bouncers:
            event = .bouncersAnswered("no pgbouncer (simulated)")
        case .pauseBouncers:
            guard let (pause, deadline) = stepping.pause else { return }
            let (acknowledged, awaited) = acknowledgements(i, of: pause, phase: .paused)
            if !awaited.isEmpty && now < deadline { return schedule(after: Self.bouncerPoll, .stepDown(i, generation: nodes[i].generation)) }
            event = .bouncersAnswered(awaited.isEmpty ? "\(acknowledged.count) pgbouncer(s) paused" : "pgbouncer on \(awaited.map(\.value)) did not acknowledge")
        case .stopCleanly:
            let final = LSN(UInt64(stepping.history.count) * SimDatabase.bytesPerCommit)
            event = .stopped(
                clean: stepping.stoppedClean, checkpoint: stepping.stoppedClean ? final : nil, detail: stepping.stoppedClean ? "fast" : "it did not answer")
        case .readTargetPosition(let final):
            if targetReceivedCheckpoint(stepping) {
                // The shutdown checkpoint's record is past `final`.
                event = .targetReceived(LSN(final.value + 1))
            } else {
                // `receivedPosition`: the target's pg_last_wal_receive_lsn() — static once it was promoted.
                event = .targetReceived(index(of: stepping.machine.target).flatMap { nodes[$0].db.answers(at: now) ? nodes[$0].db.lastReceived : nil })
            }
        case .markHandedOver(let handed, let index):
            let marked = reachesConsul(i) && (try? consul.put(keys.switchover, handed.json.serializedBytes(), mode: .cas(index), now: tick())) == true  // an error: not marked
            event = .marked(marked)
        case .followTarget:
            let target = stepping.machine.target
            nodes[i].db.upstream = target
            nodes[i].db.standbySignal = true
            nodes[i].db.synchronousStandbyNames = ""
            publishStatus(i, local: .down(standbySignal: true), action: .stepDown(to: target), force: true)
            release(i)
            register(i, role: .standby, upstream: target)
            if let t = index(of: target) { handover = (target: t, history: stepping.history) }
            event = .followed
        case .proveLock:
            event = .proven(prove(i))
        case .startAgain:
            launch(i)
            if let index = stepping.machine.requestIndex, reachesConsul(i) { _ = consul.delete(keys.switchover, cas: index, now: tick()) }
            if options.bouncers, reachesConsul(i), consul.delete(keys.pgbouncerPause, now: tick()) {
                endBouncerPause()
                wakeAgents()
            }
            event = .startedAgain
        case .done:
            return
        }
        stepping.step = stepping.machine.next(after: event)
        nodes[i].steppingDown = stepping
        if case .done(let outcome) = stepping.step {
            nodes[i].steppingDown = nil
            switch outcome {
            case .handedOver(let received, _): note("\(me) stepped down for \(stepping.machine.target) (it has WAL up to \(received))")
            case .calledOff(let reason): note("\(me) called the switchover off: \(reason)")
            case .stoppedUnproven(let reason): note("\(me) called the switchover off (\(reason)) and could not prove the lock: PostgreSQL stays stopped")
            }
            return
        }
        carryOutStepDown(i)
    }

    /// Whether the switchover's target received the shutdown checkpoint (the mutant says it always did).
    private func targetReceivedCheckpoint(_ stepping: SteppingDown) -> Bool {
        guard let t = index(of: stepping.machine.target) else { return false }
        return stepping.receivedCheckpoint.contains(t) || options.mutant == .handOverUnreceived
    }
}
