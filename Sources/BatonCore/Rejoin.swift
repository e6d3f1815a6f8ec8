/// A former primary (or a standby on another history) made a standby of the leader, as steps the shell
/// carries out and answers (the live monitor and the simulator run the same machine): the data
/// directory is never touched unless the leader answers; then the local PostgreSQL is stopped, rewound
/// with pg_rewind onto the leader's history (the WAL past the point where they parted is thrown away) —
/// or cloned afresh when the directory is empty or pg_rewind cannot do it, the old directory moved
/// aside, never deleted — and started as the leader's standby.
public struct Rejoin: Sendable {
    public let leader: NodeName
    private var phase = Phase.starting
    private var stopped = ""

    private enum Phase { case starting, checkingLeader, stopping, rewinding, cloning(why: String), following(how: String), done }

    public init(leader: NodeName) { self.leader = leader }

    /// What the shell carries out next, then reports with ``Event``.
    public enum Step: Sendable, Equatable {
        /// Connect to the leader's PostgreSQL and checkpoint it (pg_rewind reads the new timeline from
        /// its control file): ``Event/leaderAnswered(_:)``.
        case checkLeader
        /// Stop the local PostgreSQL: ``Event/stopped(how:empty:)``.
        case stopLocal
        /// pg_rewind from the leader: ``Event/rewound(failure:)``.
        case rewind
        /// A fresh clone of the leader, the old directory moved aside: ``Event/cloned(movedTo:)``.
        case clone
        /// Standby settings naming the leader, standby.signal, PostgreSQL started, the registration a
        /// standby of the leader: ``Event/following``.
        case follow
        case done(Outcome)
    }

    /// What happened to the last ``Step``.
    public enum Event: Sendable, Equatable {
        case start
        /// nil: it answered; else why not (which says that the data directory is not touched).
        case leaderAnswered(failure: String?)
        /// How the stop went (for the operator), and whether the data directory is empty.
        case stopped(how: String, empty: Bool)
        /// nil: rewound; else pg_rewind's failure.
        case rewound(failure: String?)
        /// Where the old directory went (nil: it was empty).
        case cloned(movedTo: String?)
        case following
    }

    public enum Outcome: Sendable, Equatable {
        /// A standby of the leader; how, for the event.
        case rejoined(how: String)
        /// Nothing touched; why.
        case refused(String)
    }

    /// The next step after `event`.
    public mutating func next(after event: Event) -> Step {
        switch (phase, event) {
        case (.starting, .start):
            phase = .checkingLeader
            return .checkLeader
        case (.checkingLeader, .leaderAnswered(let failure)):
            if let failure {
                phase = .done
                return .done(.refused("not rejoining \(leader): \(failure)"))
            }
            phase = .stopping
            return .stopLocal
        case (.stopping, .stopped(let how, let empty)):
            stopped = how
            if empty {
                phase = .cloning(why: "the data directory is empty")
                return .clone
            }
            phase = .rewinding
            return .rewind
        case (.rewinding, .rewound(let failure)):
            if let failure {
                phase = .cloning(why: "pg_rewind failed: \(failure)")
                return .clone
            }
            phase = .following(how: "rewound with pg_rewind")
            return .follow
        case (.cloning(let why), .cloned(let moved)):
            phase = .following(how: "cloned afresh (\(why); the old directory is \(moved ?? "nothing (it was empty)"))")
            return .follow
        case (.following(let how), .following):
            phase = .done
            return .done(.rejoined(how: "\(how) (PostgreSQL was stopped: \(stopped)); following \(leader)"))
        default:
            preconditionFailure("Rejoin: \(event) does not answer the step of phase \(phase)")
        }
    }
}
