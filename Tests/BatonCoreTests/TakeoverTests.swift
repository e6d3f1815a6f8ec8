import BatonCore
import ConsulAPI
import Testing

@Suite("switchover and manual failover checks")
struct TakeoverTests {
    let pg1 = try! NodeName("pg1")
    let pg2 = try! NodeName("pg2")
    func registration(_ name: NodeName, _ role: NodeRole) -> NodeRegistration {
        NodeRegistration(name: name, address: try! HostAddress("127.0.0.1"), port: try! TCPPort(5432), role: role, upstream: nil, priority: 100, location: "default")
    }
    func target(healthy: Bool = true, position: UInt64? = 1000, role: NodeRole = .standby) -> TakeoverCheck.Target {
        TakeoverCheck.Target(name: pg2, registered: registration(pg2, role), healthy: healthy, position: position.map(LSN.init))
    }

    @Test func switchoverNeedsAHealthyCaughtUpStandbyAndALeader() {
        #expect(TakeoverCheck.switchover(leader: pg1, leaderPosition: LSN(1000), target: target(), maximumLag: 100) == nil)
        #expect(TakeoverCheck.switchover(leader: nil, leaderPosition: nil, target: target(), maximumLag: 100)?.contains("baton failover") == true)
        #expect(TakeoverCheck.switchover(leader: pg2, leaderPosition: nil, target: target(), maximumLag: 100)?.contains("already") == true)
        #expect(TakeoverCheck.switchover(leader: pg1, leaderPosition: LSN(1000), target: target(healthy: false), maximumLag: 100)?.contains("not healthy") == true)
        #expect(TakeoverCheck.switchover(leader: pg1, leaderPosition: LSN(5000), target: target(), maximumLag: 100)?.contains("behind") == true)
        #expect(TakeoverCheck.switchover(leader: pg1, leaderPosition: LSN(1000), target: target(role: .primary), maximumLag: 100) != nil)
        let unregistered = TakeoverCheck.Target(name: pg2, registered: nil, healthy: true, position: LSN(1))
        #expect(TakeoverCheck.switchover(leader: pg1, leaderPosition: nil, target: unregistered, maximumLag: 100)?.contains("not registered") == true)
    }

    @Test func manualFailoverNeedsNoLeaderAndConsentToLoseData() {
        let best = FailoverChoice(ranked: [pg2], ineligible: [:])
        #expect(TakeoverCheck.failover(leader: nil, target: target(), choice: best, allowDataLoss: false) == nil)
        #expect(TakeoverCheck.failover(leader: pg1, target: target(), choice: best, allowDataLoss: true)?.contains("switchover") == true)
        let other = try! NodeName("pg3")
        let behind = FailoverChoice(ranked: [other, pg2], ineligible: [:])
        #expect(TakeoverCheck.failover(leader: nil, target: target(), choice: behind, allowDataLoss: false)?.contains("--allow-data-loss") == true)
        #expect(TakeoverCheck.failover(leader: nil, target: target(), choice: behind, allowDataLoss: true) == nil)
        let lagging = FailoverChoice(ranked: [], ineligible: [pg2: .lagOverLimit(bytes: 5, limit: 1)])
        #expect(TakeoverCheck.failover(leader: nil, target: target(), choice: lagging, allowDataLoss: false)?.contains("--allow-data-loss") == true)
        #expect(TakeoverCheck.failover(leader: nil, target: target(healthy: false), choice: best, allowDataLoss: true)?.contains("not healthy") == true)
    }

    @Test func requestsRoundTripAndRejectHostileNames() throws {
        let request = TakeoverRequest(to: pg2, from: pg1, time: "t")
        #expect(try TakeoverRequest(bytes: request.json.serializedBytes(), key: "k") == request)
        #expect(throws: ValidationProblem.self) { try TakeoverRequest(bytes: Array(#"{"to":"pg2\n"}"#.utf8), key: "k") }
        #expect(throws: ValidationProblem.self) { try TakeoverRequest(bytes: Array("[]".utf8), key: "k") }
    }
}
