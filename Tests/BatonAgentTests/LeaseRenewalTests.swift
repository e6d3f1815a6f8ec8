import BatonCore
import ConsulAPI
import Testing

struct LeaseRenewalTests {
    @Test("a session is renewed every third of the TTL (at least a loop), the leader's too, and at once when there is none")
    func renewalDue() {
        var config = ClusterConfig()
        config.ttl = .seconds(9)
        config.loopWait = .seconds(1)
        #expect(config.sessionRenewalDue(sinceConfirmed: nil))
        #expect(!config.sessionRenewalDue(sinceConfirmed: .zero))
        #expect(!config.sessionRenewalDue(sinceConfirmed: .milliseconds(2_999)))
        #expect(config.sessionRenewalDue(sinceConfirmed: .seconds(3)))
        // The shortest TTL the cluster accepts (3 loops): renewed every loop.
        config.ttl = .seconds(3)
        #expect(config.sessionRenewalDue(sinceConfirmed: .seconds(1)))
        #expect(!config.sessionRenewalDue(sinceConfirmed: .milliseconds(900)))
    }
}
