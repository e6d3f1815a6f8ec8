import BatonCore
import Testing

@Suite("bootstrap planner")
struct BootstrapPlannerTests {
    static let me = try! NodeName("pg2")
    static let other = try! NodeName("pg1")
    static let cluster = try! ClusterName("main")
    static let primary = NodeRegistration(
        name: other, address: try! HostAddress("198.18.0.1"), port: try! TCPPort(5432), role: .primary, upstream: nil, priority: 100,
        location: "default")

    func observe(
        creating: Bool, claim: ClusterClaim? = nil, data: DataDirectoryState.Kind = .empty, running: Bool = false,
        primary: NodeRegistration? = nil, force: Bool = false, keepalived: Bool = true
    ) -> BootstrapObservation {
        BootstrapObservation(
            node: Self.me, cluster: Self.cluster, creating: creating, claim: claim, dataDirectory: DataDirectoryState(kind: data),
            postgresRunning: running, primary: primary, forceClone: force, keepalivedWanted: keepalived)
    }

    func refusal(_ o: BootstrapObservation) -> String? {
        do {
            _ = try BootstrapPlanner.plan(o)
            return nil
        } catch {
            return error.message
        }
    }

    // MARK: --master

    @Test func aFreshMasterClaimsInitialisesAndRegisters() throws {
        let steps = try BootstrapPlanner.plan(observe(creating: true))
        #expect(
            steps == [
                .claimCluster, .initdb, .configurePostgres(standbyOf: nil), .startPostgres, .ensureReplicationRole, .recordSystemIdentifier,
                .allocatePriority, .register(role: .primary, upstream: nil), .writeKeepalived(initialState: "MASTER"),
                .writePgBouncer(target: Self.me), .writeNodeConfig,
            ])
    }

    @Test func aMasterRerunDoesNotClaimOrInitialiseAgain() throws {
        let claim = ClusterClaim(node: Self.me, systemIdentifier: "42")
        let steps = try BootstrapPlanner.plan(observe(creating: true, claim: claim, data: .cluster(systemIdentifier: "42", standby: false), running: true))
        #expect(!steps.contains(.claimCluster) && !steps.contains(.initdb))
        #expect(steps.contains(.reloadPostgres) && !steps.contains(.startPostgres))
    }

    @Test func aMasterResumesAfterItsClaimButBeforeInitdbFinished() throws {
        let claim = ClusterClaim(node: Self.me, systemIdentifier: nil)
        let steps = try BootstrapPlanner.plan(observe(creating: true, claim: claim))
        #expect(steps.first == .initdb)
    }

    @Test func aMasterAdoptsAnExistingPrimaryDataDirectory() throws {
        let steps = try BootstrapPlanner.plan(observe(creating: true, data: .cluster(systemIdentifier: "7", standby: false), running: true))
        #expect(steps.prefix(2) == [.claimCluster, .adopt(systemIdentifier: "7")])
    }

    @Test func aMasterWithoutAVirtualIPSkipsKeepalived() throws {
        #expect(try BootstrapPlanner.plan(observe(creating: true, keepalived: false)).contains(.skipKeepalived))
    }

    @Test func aClusterClaimedByAnotherNodeIsRefusedNamingIt() {
        let message = refusal(observe(creating: true, claim: ClusterClaim(node: Self.other, systemIdentifier: "1")))
        #expect(message?.contains("already created by node pg1") == true)
    }

    @Test func aMasterRefusesDataItMustNotTouch() {
        #expect(refusal(observe(creating: true, data: .notPostgres)) != nil)
        #expect(refusal(observe(creating: true, data: .cluster(systemIdentifier: "1", standby: true))) != nil)
        let claim = ClusterClaim(node: Self.me, systemIdentifier: "1")
        #expect(refusal(observe(creating: true, claim: claim, data: .cluster(systemIdentifier: "2", standby: false)))?.contains("another cluster") == true)
    }

    // MARK: --join

    @Test func aFreshJoinClonesThePrimaryAndWaitsForStreaming() throws {
        let claim = ClusterClaim(node: Self.other, systemIdentifier: "42")
        let steps = try BootstrapPlanner.plan(observe(creating: false, claim: claim, primary: Self.primary))
        #expect(
            steps == [
                .allocatePriority, .clone(from: Self.other), .configurePostgres(standbyOf: Self.other), .startPostgres,
                .waitForStreaming(from: Self.other), .register(role: .standby, upstream: Self.other), .writeKeepalived(initialState: "BACKUP"),
                .writePgBouncer(target: Self.other), .writeNodeConfig,
            ])
    }

    @Test func aJoinReusesAStandbyOfThisCluster() throws {
        let claim = ClusterClaim(node: Self.other, systemIdentifier: "42")
        let steps = try BootstrapPlanner.plan(
            observe(creating: false, claim: claim, data: .cluster(systemIdentifier: "42", standby: true), running: true, primary: Self.primary))
        #expect(steps.contains(.reuseStandby(systemIdentifier: "42")) && !steps.contains(.clone(from: Self.other)))
        #expect(steps.contains(.reloadPostgres))
    }

    @Test(arguments: [
        DataDirectoryState.Kind.cluster(systemIdentifier: "99", standby: true), .cluster(systemIdentifier: "99", standby: false),
        .cluster(systemIdentifier: "42", standby: false), .notPostgres,
    ])
    func aJoinRefusesADirectoryItCannotReuseUnlessForced(kind: DataDirectoryState.Kind) throws {
        let claim = ClusterClaim(node: Self.other, systemIdentifier: "42")
        #expect(refusal(observe(creating: false, claim: claim, data: kind, primary: Self.primary))?.contains("--force-clone") == true)
        let forced = try BootstrapPlanner.plan(observe(creating: false, claim: claim, data: kind, primary: Self.primary, force: true))
        #expect(forced.prefix(3) == [.allocatePriority, .moveDataDirectoryAside, .clone(from: Self.other)])
    }

    @Test func aJoinNeedsAFinishedClusterWithAPrimary() {
        #expect(refusal(observe(creating: false, primary: Self.primary))?.contains("--master") == true)
        #expect(refusal(observe(creating: false, claim: ClusterClaim(node: Self.other, systemIdentifier: nil), primary: Self.primary))?.contains("still creating") == true)
        #expect(refusal(observe(creating: false, claim: ClusterClaim(node: Self.other, systemIdentifier: "1"))) != nil)
        #expect(refusal(observe(creating: false, claim: ClusterClaim(node: Self.me, systemIdentifier: "1"), primary: Self.primary)) != nil)
        var me = Self.primary
        me.name = Self.me
        #expect(refusal(observe(creating: false, claim: ClusterClaim(node: Self.other, systemIdentifier: "1"), primary: me)) != nil)
    }

    @Test func everyStepDescribesItself() {
        let steps: [BootstrapStep] = [
            .claimCluster, .initdb, .adopt(systemIdentifier: "1"), .moveDataDirectoryAside, .clone(from: Self.other), .reuseStandby(systemIdentifier: "1"),
            .configurePostgres(standbyOf: nil), .startPostgres, .reloadPostgres, .ensureReplicationRole, .recordSystemIdentifier,
            .waitForStreaming(from: Self.other), .allocatePriority, .register(role: .primary, upstream: nil), .writeKeepalived(initialState: "MASTER"),
            .skipKeepalived, .writePgBouncer(target: Self.other), .writeNodeConfig, .configureConsulAgent, .startConsulAgent,
        ]
        #expect(Set(steps.map(\.description)).count == steps.count)
    }
}
