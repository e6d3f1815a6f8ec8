/// One entry of Consul's key/value store (Consul's `DirEntry`).
public struct KVPair: Sendable, Equatable {
    public var key: String
    /// The stored bytes; `nil` when the entry was written with an empty body (Consul's `"Value":null`).
    public var value: [UInt8]?
    public var flags: UInt64
    /// The session holding the key's lock, if any.
    public var session: String?
    public var lockIndex: UInt64
    public var createIndex: UInt64
    public var modifyIndex: UInt64

    public init(
        key: String, value: [UInt8]?, flags: UInt64 = 0, session: String? = nil, lockIndex: UInt64 = 0,
        createIndex: UInt64 = 0, modifyIndex: UInt64 = 0
    ) {
        self.key = key
        self.value = value
        self.flags = flags
        self.session = session
        self.lockIndex = lockIndex
        self.createIndex = createIndex
        self.modifyIndex = modifyIndex
    }

    /// The value as UTF-8 text (`""` for a null value).
    public var stringValue: String { value.map { String(decoding: $0, as: UTF8.self) } ?? "" }

    /// Consul's JSON shape, in Consul's field order; `Session` is omitted when the key is not locked.
    public var json: JSONValue {
        var members: [(String, JSONValue)] = [
            ("LockIndex", .int(lockIndex)),
            ("Key", .string(key)),
            ("Flags", .int(flags)),
            ("Value", value.map { .string(Base64.encode($0)) } ?? .null),
        ]
        if let session { members.append(("Session", .string(session))) }
        members.append(("CreateIndex", .int(createIndex)))
        members.append(("ModifyIndex", .int(modifyIndex)))
        return .object(members)
    }

    /// Reads one entry of a KV GET answer.
    public init(json: JSONValue) throws(ConsulDecodingError) {
        guard let key = json.member("Key")?.stringValue else { throw ConsulDecodingError("KV entry without a Key") }
        var value: [UInt8]? = nil
        if let encoded = json.member("Value"), !encoded.isNull {
            guard let text = encoded.stringValue, let bytes = Base64.decode(text) else {
                throw ConsulDecodingError("KV entry \(key) has a Value that is not base64")
            }
            value = bytes
        }
        self.init(
            key: key, value: value, flags: json.member("Flags")?.uint64Value ?? 0,
            session: json.member("Session")?.stringValue.flatMap { $0.isEmpty ? nil : $0 },
            lockIndex: json.member("LockIndex")?.uint64Value ?? 0,
            createIndex: json.member("CreateIndex")?.uint64Value ?? 0,
            modifyIndex: json.member("ModifyIndex")?.uint64Value ?? 0)
    }
}

/// A Consul answer that does not have the shape the API documents.
public struct ConsulDecodingError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Standard base64 with padding, as Consul encodes KV values.
public enum Base64 {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    private static let reverse: [UInt8] = {
        var table = [UInt8](repeating: 0xFF, count: 256)
        for (i, c) in alphabet.enumerated() { table[Int(c)] = UInt8(i) }
        return table
    }()

    public static func encode(_ bytes: [UInt8]) -> String {
        var out = [UInt8]()
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var i = 0
        while i + 2 < bytes.count {
            let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2])
            out += [alphabet[Int(n >> 18 & 63)], alphabet[Int(n >> 12 & 63)], alphabet[Int(n >> 6 & 63)], alphabet[Int(n & 63)]]
            i += 3
        }
        let rest = bytes.count - i
        if rest == 1 {
            let n = UInt32(bytes[i]) << 16
            out += [alphabet[Int(n >> 18 & 63)], alphabet[Int(n >> 12 & 63)], UInt8(ascii: "="), UInt8(ascii: "=")]
        } else if rest == 2 {
            let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8
            out += [alphabet[Int(n >> 18 & 63)], alphabet[Int(n >> 12 & 63)], alphabet[Int(n >> 6 & 63)], UInt8(ascii: "=")]
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Decodes padded standard base64; `nil` for anything else.
    public static func decode(_ text: String) -> [UInt8]? {
        let chars = Array(text.utf8)
        guard chars.count % 4 == 0 else { return nil }
        var out = [UInt8]()
        out.reserveCapacity(chars.count / 4 * 3)
        var i = 0
        while i < chars.count {
            var n: UInt32 = 0
            var padding = 0
            for j in 0..<4 {
                let c = chars[i + j]
                if c == UInt8(ascii: "=") {
                    guard i + 4 == chars.count, j >= 2 else { return nil }
                    padding += 1
                    n <<= 6
                    continue
                }
                guard padding == 0 else { return nil }
                let v = reverse[Int(c)]
                guard v != 0xFF else { return nil }
                n = n << 6 | UInt32(v)
            }
            out.append(UInt8(n >> 16 & 0xFF))
            if padding < 2 { out.append(UInt8(n >> 8 & 0xFF)) }
            if padding < 1 { out.append(UInt8(n & 0xFF)) }
            i += 4
        }
        return out
    }
}
