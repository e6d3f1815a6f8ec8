import BatonCore
import Testing

@Suite("VRRP notifications and events")
struct NotificationTests {
    let node = try! NodeName("pg1")
    var nodes: KeepalivedNodes { KeepalivedNodes(nodes: [KeepalivedNode(name: node, priority: 200), KeepalivedNode(name: try! NodeName("pg2"), priority: 190)]) }

    @Test(arguments: [
        [String](), ["INSTANCE", "baton_main", "MASTER"], ["INSTANCE", "baton_main", "MASTER", "200", "extra"],
        ["VRRP", "baton_main", "MASTER", "200"], ["INSTANCE", "baton main", "MASTER", "200"], ["INSTANCE", "x\ny", "MASTER", "200"],
        ["INSTANCE", "baton_main", "master", "200"], ["INSTANCE", "baton_main", "LEADER", "200"], ["INSTANCE", "baton_main", "MASTER", "256"],
        ["INSTANCE", "baton_main", "MASTER", "high"], ["INSTANCE", "", "MASTER", "1"],
    ])
    func badArgumentsAreRefused(arguments: [String]) {
        #expect(throws: ValidationProblem.self) { try VRRPNotification(arguments: arguments, sequence: 1) }
    }

    @Test func aNewerNotificationIsRecordedAndALateOlderOneIgnored() throws {
        let master = try VRRPNotification(arguments: ["INSTANCE", "baton_main", "MASTER", "200"], sequence: 20)
        let fault = try VRRPNotification(arguments: ["INSTANCE", "baton_main", "FAULT", "200"], sequence: 30)
        let afterFault = try #require(try fault.applied(to: nodes, node: node, time: "t2"))
        #expect(afterFault.node(node)?.state == "FAULT" && afterFault.node(node)?.stateSequence == 30)
        #expect(try master.applied(to: afterFault, node: node, time: "t1") == nil, "the late MASTER must not overwrite FAULT")
        #expect(try fault.applied(to: afterFault, node: node, time: "t2") == nil, "a repeat changes nothing")
        let applied = try #require(try master.applied(to: nodes, node: node, time: "t1"))
        #expect(applied.node(try NodeName("pg2")) == nodes.node(try NodeName("pg2")), "other nodes are untouched")
    }

    @Test func anUnknownNodeIsAnError() throws {
        let n = try VRRPNotification(arguments: ["INSTANCE", "baton_main", "BACKUP", "190"], sequence: 1)
        #expect(throws: ValidationProblem.self) { try n.applied(to: nodes, node: try NodeName("pg9"), time: "t") }
    }

    @Test func sequencesFollowStartTimeThenPID() {
        #expect(VRRPNotification.sequence(startTicks: 100, pid: 4_000_000) < VRRPNotification.sequence(startTicks: 101, pid: 2))
        #expect(VRRPNotification.sequence(startTicks: 100, pid: 10) < VRRPNotification.sequence(startTicks: 100, pid: 11))
    }

    @Test func eventKeysSortByTimeAndPruneTheOldest() throws {
        let a = ClusterEvent.key(prefix: "e/", nanoseconds: 9, node: node)
        let b = ClusterEvent.key(prefix: "e/", nanoseconds: 10, node: node)
        #expect(a < b && a == "e/00000000000000000009-pg1")
        #expect(ClusterEvent.keysToPrune([b, a], keep: 1) == [a])
        #expect(ClusterEvent.keysToPrune([a], keep: 2).isEmpty)
    }

    @Test("a notification kept for the monitor reads back the same; anything else kept is refused")
    func spool() throws {
        let n = try VRRPNotification(arguments: ["INSTANCE", "baton_lab", "FAULT", "190"], sequence: 123_456)
        #expect(try VRRPNotification(spool: n.spoolText) == n)
        #expect(throws: ValidationProblem.self) { try VRRPNotification(spool: "INSTANCE baton_lab FAULT 190") }
        #expect(throws: ValidationProblem.self) { try VRRPNotification(spool: "INSTANCE baton_lab HAPPY 190 5") }
    }
}
