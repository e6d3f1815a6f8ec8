import BatonCore
import CLibCrypto
import Foundation

/// Signs and checks the node API's writes (`POST /failsafe`): a member must not promise, on a forged
/// request, to hold off a failover (issue 23, finding 7). The key is derived from the replication
/// password — the secret every node of the cluster already holds — and the cluster's name; requests
/// carry `Authorization: Baton-HMAC-SHA256 time=<unix seconds>, signature=<hex>`, the HMAC-SHA-256 of
/// the method, path, time and body. The secret itself never travels; a captured request replays only
/// within ``window`` of its time (put the node API behind TLS where the network is not trusted).
public struct NodeAPISigner: Sendable {
    /// How far a request's time may be from the receiver's clock, either way (the nodes' clocks must
    /// agree within it — NTP — for failsafe mode to work).
    public static let window: Int64 = 60
    public static let scheme = "Baton-HMAC-SHA256"

    private let key: [UInt8]

    public init(replicationPassword: String, cluster: ClusterName) {
        key = Self.hmac(key: Array(replicationPassword.utf8), message: Array("baton node API\n\(cluster.value)".utf8))
    }

    /// The `Authorization` header's value for a request sent at `time` (unix seconds).
    public func authorization(method: String, path: String, body: [UInt8], time: Int64) -> String {
        "\(Self.scheme) time=\(time), signature=\(Self.hex(signature(method: method, path: path, body: body, time: time)))"
    }

    /// Why the request is not signed by a member of this cluster, or nil when it is.
    public func refusal(_ header: String?, method: String, path: String, body: [UInt8], now: Int64) -> String? {
        guard let header, !header.isEmpty else {
            return "unsigned: the members of this cluster sign \(method) \(path) with a key derived from the replication password (an earlier Baton does not)"
        }
        guard header.hasPrefix(Self.scheme + " ") else { return "the Authorization header is not \(Self.scheme)" }
        var time: Int64?
        var signature: [UInt8]?
        for part in header.dropFirst(Self.scheme.count + 1).split(separator: ",") {
            let pair = part.trimmingCharacters(in: .whitespaces).split(separator: "=", maxSplits: 1)
            guard pair.count == 2 else { return "the Authorization header is malformed" }
            switch pair[0] {
            case "time": time = Int64(pair[1])
            case "signature": signature = Self.bytes(hex: String(pair[1]))
            default: return "the Authorization header has an unknown field \(Quote.show(String(pair[0])))"
            }
        }
        guard let time, let signature else { return "the Authorization header needs time and signature" }
        guard abs(now - time) <= Self.window else {
            return "signed at \(time), \(abs(now - time)) s from this node's clock (at most \(Self.window) s): a replay, or clocks that disagree"
        }
        let expected = self.signature(method: method, path: path, body: body, time: time)
        guard signature.count == expected.count, CRYPTO_memcmp(signature, expected, expected.count) == 0 else {
            return "the signature does not match: the sender's replication password differs from this node's, or the request was changed"
        }
        return nil
    }

    func signature(method: String, path: String, body: [UInt8], time: Int64) -> [UInt8] {
        Self.hmac(key: key, message: Array("\(method) \(path)\n\(time)\n".utf8) + body)
    }

    /// HMAC-SHA-256 (RFC 2104) by OpenSSL's libcrypto.
    public static func hmac(key: [UInt8], message: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        let done = key.withUnsafeBufferPointer { k in
            message.withUnsafeBufferPointer { m in
                HMAC(EVP_sha256(), k.baseAddress, Int32(k.count), m.baseAddress, m.count, &out, &length)
            }
        }
        // HMAC fails only when libcrypto cannot allocate: nothing can be signed or checked then.
        precondition(done != nil, "libcrypto's HMAC failed")
        return Array(out.prefix(Int(length)))
    }

    public static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 2)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func bytes(hex: String) -> [UInt8]? {
        let text = Array(hex.utf8)
        guard text.count % 2 == 0 else { return nil }
        func value(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
            default: return nil
            }
        }
        var out: [UInt8] = []
        var i = 0
        while i < text.count {
            guard let high = value(text[i]), let low = value(text[i + 1]) else { return nil }
            out.append(high << 4 | low)
            i += 2
        }
        return out
    }
}
