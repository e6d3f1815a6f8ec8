import BatonCore
import ConsulAPI
import Testing

@Suite("node API health endpoints")
struct NodeHealthTests {
    let me = try! NodeName("pg2")
    let now: UInt64 = 100_000_000_000

    func view(_ local: LocalPostgres, leading: Bool = false, sync: String? = nil, leaderAt: UInt64 = 0x1000) -> NodeView {
        var v = NodeView(node: me)
        v.local = local
        v.leading = leading
        v.leaseDeadline = leading ? now + 1_000_000_000 : 0
        v.loopRanAt = now - 500_000_000
        v.synchronousStandby = sync.map { try! NodeName($0) }
        v.leaderPosition = LSN(leaderAt)
        v.consulReachable = true
        return v
    }

    func status(_ path: String, _ v: NodeView, _ query: [(String, String)] = []) throws -> Int? {
        try NodeHealth.answer(path, query: query, view: v, now: now)?.status
    }

    let primary = LocalPostgres.primary(position: LSN(0x1000), timeline: 2)
    let standby = LocalPostgres.standby(position: LSN(0x800), timeline: 2, upstream: "x:1", streaming: true)

    @Test func primaryOnlyWithTheLockAndARunningLease() throws {
        #expect(try status("/primary", view(primary, leading: true)) == 200)
        #expect(try status("/primary", view(primary, leading: false)) == 503, "writable but without the lock: never routed to")
        var expired = view(primary, leading: true)
        expired.leaseDeadline = now
        #expect(try status("/primary", expired) == 503, "the lease ran out: the watchdog fences now")
        #expect(try status("/primary", view(standby)) == 503)
    }

    @Test func replicaWithLagAndTags() throws {
        #expect(try status("/replica", view(standby)) == 200)
        #expect(try status("/replica", view(standby), [("lag", "4096")]) == 200, "0x800 bytes behind")
        #expect(try status("/replica", view(standby), [("lag", "1kB")]) == 503)
        #expect(try status("/replica", view(standby), [("lag", "1MB")]) == 200)
        #expect(try status("/replica", view(.standby(position: LSN(0x800), timeline: 2, upstream: nil, streaming: false))) == 503)
        #expect(try status("/replica", view(primary, leading: true)) == 503)
        var never = view(standby)
        never.priority = 0
        #expect(try status("/replica", never, [("tag_nofailover", "false")]) == 503)
        #expect(try status("/replica", never, [("tag_nofailover", "true")]) == 200)
        #expect(throws: ValidationProblem.self) { try status("/replica", view(standby), [("lag", "lots")]) }
        #expect(throws: ValidationProblem.self) { try status("/replica", view(standby), [("bogus", "1")]) }
    }

    @Test func theOtherEndpoints() throws {
        #expect(try status("/read-only", view(standby)) == 200)
        #expect(try status("/read-only", view(primary, leading: true)) == 200)
        #expect(try status("/read-only", view(primary, leading: false)) == 503)
        #expect(try status("/health", view(.unresponsive(standbySignal: false, postmaster: true))) == 503)
        #expect(try status("/health", view(standby)) == 200)
        #expect(try status("/liveness", view(standby)) == 200)
        var stale = view(standby)
        stale.loopRanAt = now - 3_000_000_000
        #expect(try status("/liveness", stale) == 503, "the loop has not run for over 2 × loop_wait")
        #expect(try status("/readiness", view(standby)) == 200)
        #expect(try status("/readiness", view(.down(standbySignal: true))) == 503)
        #expect(try status("/sync", view(standby, sync: "pg2")) == 200)
        #expect(try status("/async", view(standby, sync: "pg2")) == 503)
        #expect(try status("/async", view(standby, sync: "pg3")) == 200)
        #expect(try status("/nope", view(standby)) == nil)
    }

    @Test func sizes() throws {
        #expect(try NodeHealth.bytes("1048576") == 1 << 20)
        #expect(try NodeHealth.bytes("16kB") == 16 << 10)
        #expect(try NodeHealth.bytes("1MB") == 1 << 20)
        #expect(try NodeHealth.bytes("2GB") == 2 << 30)
        for bad in ["", "MB", "-1", "1.5MB", "1mb"] { #expect(throws: ValidationProblem.self) { try NodeHealth.bytes(bad) } }
    }

    @Test func failsafeIsGrantedOnlyWhenNoOtherNodeLeads() throws {
        let leader = try NodeName("pg1")
        var v = view(standby)
        v.leader = leader
        #expect(NodeHealth.failsafe(request: leader, view: v, now: now).granted, "it sees the asker holding the lock")
        let promise = NodeHealth.failsafe(request: leader, view: v, now: now).grant?.until
        #expect(promise == now + 3_500_000_000, "fence_timeout plus the margin: longer than the leader may stay writable on this answer")
        v.leader = try NodeName("pg3")
        #expect(!NodeHealth.failsafe(request: leader, view: v, now: now).granted, "another node leads")
        v.consulReachable = false
        #expect(NodeHealth.failsafe(request: leader, view: v, now: now).granted, "this node cannot reach Consul either")
        v.consulReachable = true
        v.leader = me
        #expect(!NodeHealth.failsafe(request: leader, view: v, now: now).granted, "this node leads itself")
    }

    @Test("a promise outlasts the period the leader names (longer or shorter than this node's own); an earlier one is never cut short")
    func failsafePromiseOutlastsTheLeader() throws {
        let leader = try NodeName("pg1")
        var v = view(standby)
        v.leader = leader
        #expect(NodeHealth.failsafe(request: leader, fenceAfter: .seconds(8), view: v, now: now).grant?.until == now + 8_500_000_000, "the leader's 8 s")
        let round = NodeHealth.failsafe(request: leader, fenceAfter: .milliseconds(1200), view: v, now: now).grant
        #expect(round == LeaseGrant(leader: leader, at: now, until: now + 1_700_000_000, period: .milliseconds(1700)), "a round's 1.2 s plus the margin")
        v.failsafeGrant = LeaseGrant(leader: leader, at: now, until: now + 8_500_000_000, period: .milliseconds(8500))
        let later = NodeHealth.failsafe(request: leader, fenceAfter: .milliseconds(1200), view: v, now: now + 1_000_000_000).grant
        #expect(later == LeaseGrant(leader: leader, at: now + 1_000_000_000, until: now + 8_500_000_000, period: .milliseconds(1700)), "the earlier 8.5 s still hold")
        #expect(later?.seen(now: now + 2_000_000_000) == LeaseGrant.Seen(leader: leader, age: .seconds(1), left: .milliseconds(6500), period: .milliseconds(1700)))
    }

    @Test("with failsafe_mode off a failsafe request is refused (a forged one holds off no failover)")
    func failsafeRefusedWhenOff() throws {
        let leader = try NodeName("pg1")
        var v = view(standby)
        v.leader = leader
        v.failsafeMode = false
        let answer = NodeHealth.failsafe(request: leader, view: v, now: now)
        #expect(!answer.granted && answer.reason.contains("failsafe_mode is off"), "\(answer)")
        v.consulReachable = false
        #expect(!NodeHealth.failsafe(request: leader, view: v, now: now).granted, "not even when Consul is out of reach")
    }
}
