/// A planned switchover on the primary that holds the lock, as steps the shell carries out and answers
/// (the live monitor's `stepDown` and the simulator's leader run the same machine): every pgbouncer
/// asked to hold its clients, PostgreSQL stopped cleanly (the walsenders ship every record, the shutdown
/// checkpoint included, to the standbys), the target's received position checked against that
/// checkpoint, the request marked handed over, and only then this node made the target's standby and
/// the lock released. A stop that was not clean, a target that did not receive the checkpoint, or a
/// request that cannot be marked calls the switchover off: the lock is proven again before PostgreSQL
/// starts again as the primary, and if it cannot be, PostgreSQL stays stopped. Nothing acknowledged is
/// left behind either way.
public struct StepDown: Sendable {
    public let target: NodeName
    public let request: TakeoverRequest
    /// The pending request's modify index as the loop read it; nil when it read none (the request
    /// cannot be marked then, and the switchover is called off).
    public let requestIndex: UInt64?
    private var phase = Phase.starting
    private var pausing = ""

    private enum Phase { case starting, checkpointing, pausing, stopping, reading(final: LSN), marking(received: LSN), following(received: LSN), proving(String), restarting(String), done }

    public init(target: NodeName, request: TakeoverRequest, requestIndex: UInt64?) {
        self.target = target
        self.request = request
        self.requestIndex = requestIndex
    }

    /// What the shell carries out next, then reports with ``Event``.
    public enum Step: Sendable, Equatable {
        /// A checkpoint while clients still run, so that the clean stop is short; its outcome does not
        /// matter: ``Event/checkpointed``.
        case checkpoint
        /// Ask every pgbouncer to hold its clients and wait for them, bounded by `pgbouncer_timeout`:
        /// ``Event/bouncersAnswered(_:)`` with what happened.
        case pauseBouncers
        /// No longer a writable primary (keepalived told), then stop PostgreSQL cleanly and read its
        /// control file: ``Event/stopped(clean:checkpoint:detail:)``.
        case stopCleanly
        /// Read what the target received, polling (bounded) until it passes `final`, the shutdown
        /// checkpoint: ``Event/targetReceived(_:)``.
        case readTargetPosition(beyond: LSN)
        /// Write the request marked handed over, check-and-set at `index`: ``Event/marked(_:)``.
        case markHandedOver(TakeoverRequest, index: UInt64)
        /// Become the target's standby: its upstream settings and standby.signal written, this node
        /// reported down, the lock released, the registration a standby of the target: ``Event/followed``.
        case followTarget
        /// The switchover is off: prove the lock before PostgreSQL may take writes again:
        /// ``Event/proven(_:)``.
        case proveLock
        /// Start PostgreSQL as the primary again and remove the request and the pgbouncers' pause:
        /// ``Event/startedAgain``.
        case startAgain
        /// The step-down is over.
        case done(Outcome)
    }

    /// What happened to the last ``Step``.
    public enum Event: Sendable, Equatable {
        case start
        case checkpointed
        case bouncersAnswered(String)
        /// Whether the stop was clean (a fast shutdown that the control file calls a clean primary
        /// shutdown), the shutdown checkpoint's position, and what the shell saw, for the operator.
        case stopped(clean: Bool, checkpoint: LSN?, detail: String)
        case targetReceived(LSN?)
        case marked(Bool)
        case followed
        case proven(Bool)
        case startedAgain
    }

    public enum Outcome: Sendable, Equatable {
        /// The target has every record up to `received`, the lock is free for it alone.
        case handedOver(received: LSN, pausing: String)
        /// This node stays the primary.
        case calledOff(reason: String)
        /// Called off, and the lock could not be proven: PostgreSQL stays stopped (another node may
        /// hold the lock by now).
        case stoppedUnproven(reason: String)
    }

    /// The next step after `event`.
    public mutating func next(after event: Event) -> Step {
        switch (phase, event) {
        case (.starting, .start):
            phase = .checkpointing
            return .checkpoint
        case (.checkpointing, .checkpointed):
            phase = .pausing
            return .pauseBouncers
        case (.pausing, .bouncersAnswered(let what)):
            pausing = what
            phase = .stopping
            return .stopCleanly
        case (.stopping, .stopped(let clean, let checkpoint, let detail)):
            guard clean, let final = checkpoint else { return callOff("PostgreSQL did not shut down cleanly (\(detail))") }
            phase = .reading(final: final)
            return .readTargetPosition(beyond: final)
        case (.reading(let final), .targetReceived(let received)):
            // The shutdown checkpoint is the last record: a target past its start has them all.
            guard let received, received > final else {
                return callOff("\(target) did not receive WAL up to \(final) (it has \(received?.description ?? "nothing"))")
            }
            // The request marked handed over says the target has every record: the target alone may
            // take the lock this node frees, which it may not for a request whose leader was lost.
            guard let requestIndex else { return callOff("the request could not be marked handed over (it is gone)") }
            var handed = request
            handed.handedOver = true
            handed.handedOverAt = final
            phase = .marking(received: received)
            return .markHandedOver(handed, index: requestIndex)
        case (.marking(let received), .marked(let ok)):
            guard ok else { return callOff("the request could not be marked handed over (withdrawn, changed, or Consul did not answer)") }
            phase = .following(received: received)
            return .followTarget
        case (.following(let received), .followed):
            phase = .done
            return .done(.handedOver(received: received, pausing: pausing))
        case (.proving(let reason), .proven(let ok)):
            guard ok else {
                phase = .done
                return .done(.stoppedUnproven(reason: reason))
            }
            phase = .restarting(reason)
            return .startAgain
        case (.restarting(let reason), .startedAgain):
            phase = .done
            return .done(.calledOff(reason: reason))
        default:
            preconditionFailure("StepDown: \(event) does not answer the step of phase \(phase)")
        }
    }

    private mutating func callOff(_ reason: String) -> Step {
        phase = .proving(reason)
        return .proveLock
    }
}
