import BatonCore
import ConsulAPI
import Testing

@Suite("status page")
struct StatusPageTests {
    func page(leader: String?, detail: String = "promoted") throws -> String {
        let keys = ClusterKeys(cluster: try ClusterName("c"))
        var pairs = try [("a", NodeRole.primary), ("b", .standby)].map { try DayTwoTests.registration($0.0, $0.1, keys: keys) }
        if let leader { pairs.append(KVPair(key: keys.leader, value: Array(leader.utf8), session: "s")) }
        var snapshot = ClusterSnapshot(pairs: pairs, keys: keys)
        let event = ClusterEvent(time: "2026-12-06T17:00:00Z", node: try NodeName("a"), kind: "promote", detail: detail)
        snapshot.addEvents([KVPair(key: keys.eventsPrefix + "1-a", value: event.json.serializedBytes())])
        return StatusPage.html(
            status: StatusView(snapshot: snapshot, cluster: try ClusterName("c"), events: 5),
            explanation: FailoverExplanation(snapshot: snapshot, live: [try NodeName("a")]), answeredBy: try NodeName("b"), time: "now")
    }

    @Test("the leader, a row per node (the leader's marked), the verdict with each reason, the events; it refreshes itself")
    func content() throws {
        let html = try page(leader: "a")
        #expect(html.contains(#"<span id="leader-name">a</span>"#) && html.contains(#"<tr class="leader" data-node="a">"#))
        #expect(html.contains(#"<tr data-node="b">"#) && html.contains(#"<meta http-equiv="refresh" content="2">"#))
        #expect(html.contains("Nobody would take over") && html.contains("<b>b</b>: its monitor is not running"), "b has no live monitor")
        #expect(html.contains("<td>promote</td>") && html.contains("As b's monitor sees the cluster"))
        #expect(!html.contains("<script"))
        #expect(try page(leader: nil).contains("No node holds the leader lock"))
    }

    @Test("whatever comes from Consul is escaped")
    func escaping() throws {
        let html = try page(leader: "a", detail: "<script>alert('x')</script> & \"more\"")
        #expect(!html.contains("<script>") && html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;more&quot;"))
        #expect(StatusPage.escape("a<b>&\"'") == "a&lt;b&gt;&amp;&quot;&#39;")
    }
}
