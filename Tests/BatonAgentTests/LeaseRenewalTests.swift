@testable import BatonAgent
import BatonCore
import ConsulAPI
import Testing

struct LeaseRenewalTests {
    @Test("the leader renews its session every loop; another node every third of the TTL (at least a loop), and at once when it has none")
    func renewalDue() {
        var config = ClusterConfig()
        config.ttl = .seconds(9)
        config.loopWait = .seconds(1)
        for since in [Duration.zero, .milliseconds(500), .seconds(2), .seconds(3), .seconds(30)] {
            #expect(Lease.renewalDue(leading: true, sinceConfirmed: since, config: config), "leader, \(since)")
        }
        #expect(Lease.renewalDue(leading: false, sinceConfirmed: nil, config: config))
        #expect(!Lease.renewalDue(leading: false, sinceConfirmed: .zero, config: config))
        #expect(!Lease.renewalDue(leading: false, sinceConfirmed: .milliseconds(2_999), config: config))
        #expect(Lease.renewalDue(leading: false, sinceConfirmed: .seconds(3), config: config))
        // The shortest TTL the cluster accepts (3 loops): renewed every loop.
        config.ttl = .seconds(3)
        #expect(Lease.renewalDue(leading: false, sinceConfirmed: .seconds(1), config: config))
        #expect(!Lease.renewalDue(leading: false, sinceConfirmed: .milliseconds(900), config: config))
    }
}
