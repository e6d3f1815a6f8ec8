import BatonCore
import BatonSigning
import Testing

/// Issue 23, finding 7: the node API's writes are signed by a member of the cluster.
@Suite("node API signatures")
struct NodeAPISignerTests {
    let cluster = try! ClusterName("main")
    let body = Array(#"{"leader":"pg1","fence_after":"3s"}"#.utf8)

    @Test("a member's signature is accepted; an unsigned, forged, altered, replayed or malformed request is refused with the reason")
    func signatures() throws {
        let signer = NodeAPISigner(replicationPassword: "s3cret:pass", cluster: cluster)
        let now: Int64 = 1_800_000_000
        let header = signer.authorization(method: "POST", path: "/failsafe", body: body, time: now)
        #expect(header.hasPrefix("Baton-HMAC-SHA256 time=1800000000, signature="))
        #expect(!header.contains("s3cret"), "the secret never travels")
        #expect(signer.refusal(header, method: "POST", path: "/failsafe", body: body, now: now + 30) == nil)
        #expect(signer.refusal(nil, method: "POST", path: "/failsafe", body: body, now: now)?.contains("unsigned") == true)
        let other = NodeAPISigner(replicationPassword: "another", cluster: cluster)
        #expect(other.refusal(header, method: "POST", path: "/failsafe", body: body, now: now)?.contains("does not match") == true)
        let elsewhere = NodeAPISigner(replicationPassword: "s3cret:pass", cluster: try ClusterName("other"))
        #expect(elsewhere.refusal(header, method: "POST", path: "/failsafe", body: body, now: now) != nil, "another cluster's key")
        var altered = body
        altered[12] = UInt8(ascii: "2")
        #expect(signer.refusal(header, method: "POST", path: "/failsafe", body: altered, now: now)?.contains("does not match") == true)
        #expect(signer.refusal(header, method: "POST", path: "/other", body: body, now: now) != nil)
        #expect(signer.refusal(header, method: "POST", path: "/failsafe", body: body, now: now + 61)?.contains("replay") == true)
        #expect(signer.refusal(header, method: "POST", path: "/failsafe", body: body, now: now - 61) != nil)
        for bad in ["Basic abc", "Baton-HMAC-SHA256 time=1", "Baton-HMAC-SHA256 time=x, signature=00", "Baton-HMAC-SHA256 time=1800000000, signature=zz",
            "Baton-HMAC-SHA256 time=1800000000, signature=00, user=me", "Baton-HMAC-SHA256 nonsense"]
        {
            #expect(signer.refusal(bad, method: "POST", path: "/failsafe", body: body, now: now) != nil, "\(bad)")
        }
    }

    @Test("HMAC-SHA-256 gives RFC 4231's test vectors")
    func rfc4231() {
        let jefe = NodeAPISigner.hmac(key: Array("Jefe".utf8), message: Array("what do ya want for nothing?".utf8))
        #expect(NodeAPISigner.hex(jefe) == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        let long = NodeAPISigner.hmac(key: [UInt8](repeating: 0xaa, count: 131), message: Array("Test Using Larger Than Block-Size Key - Hash Key First".utf8))
        #expect(NodeAPISigner.hex(long) == "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")
    }

    @Test("the replication password comes back from the passfile bootstrap writes, escapes and all")
    func passfile() {
        for password in ["plain", "with:colon", #"back\slash"#, #"both\:mixed::"#] {
            #expect(PostgresFiles.password(fromPassfile: PostgresFiles.passfile(password: password)) == password)
        }
        #expect(PostgresFiles.password(fromPassfile: "*:*:*:someone_else:pw\n") == nil)
        #expect(PostgresFiles.password(fromPassfile: "") == nil)
    }
}
