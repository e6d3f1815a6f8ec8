import Foundation

/// A value that failed validation, with what was wrong in words an operator can act on.
public struct ValidationProblem: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Several problems found in one pass, so the operator can fix them all at once.
public struct ValidationProblems: Error, Sendable, Equatable, CustomStringConvertible {
    public var problems: [ValidationProblem]
    public init(_ problems: [ValidationProblem]) { self.problems = problems }
    public var description: String { problems.map(\.message).joined(separator: "\n") }
}

/// Collects problems while validating many values.
public struct ProblemCollector {
    public private(set) var problems: [ValidationProblem] = []
    public init() {}

    /// Runs `check`, recording its problem; returns its value or `nil`.
    public mutating func check<T>(_ check: () throws(ValidationProblem) -> T) -> T? {
        do { return try check() } catch {
            problems.append(error)
            return nil
        }
    }

    public mutating func add(_ message: String) { problems.append(ValidationProblem(message)) }

    public func throwIfAny() throws(ValidationProblems) {
        if !problems.isEmpty { throw ValidationProblems(problems) }
    }
}

/// A node's name: it becomes a Consul key, a replication slot name, keepalived's router_id and
/// PostgreSQL's application_name, so it is limited to what all of them accept unquoted.
public struct NodeName: Sendable, Hashable, Comparable, CustomStringConvertible {
    public let value: String

    public init(_ text: String, field: String = "node name") throws(ValidationProblem) {
        guard !text.isEmpty, text.count <= 50 else {
            throw ValidationProblem("\(field) \(Quote.show(text)) must be 1 to 50 characters")
        }
        guard let first = text.unicodeScalars.first, ("a"..."z").contains(first) || ("0"..."9").contains(first),
            text.unicodeScalars.allSatisfy({ ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "-" || $0 == "_" })
        else {
            throw ValidationProblem("\(field) \(Quote.show(text)) may use only lower-case letters, digits, '-' and '_', starting with a letter or digit")
        }
        value = text
    }

    /// The node's physical replication slot on whichever node is primary.
    public var slotName: String { "baton_" + (value.utf8.contains(UInt8(ascii: "-")) ? String(value.map { $0 == "-" ? "_" : $0 }) : value) }
    public var description: String { value }
    public static func < (a: NodeName, b: NodeName) -> Bool { a.value < b.value }
}

/// A cluster's name: the last segment of its Consul prefix.
public struct ClusterName: Sendable, Hashable, CustomStringConvertible {
    public let value: String
    public init(_ text: String) throws(ValidationProblem) {
        do { _ = try NodeName(text, field: "cluster name") } catch { throw error }
        value = text
    }
    public var description: String { value }
}

/// A host as other nodes reach it: an IPv4 or IPv6 address, or a DNS name.
public struct HostAddress: Sendable, Hashable, CustomStringConvertible {
    public let value: String

    public init(_ text: String, field: String = "address") throws(ValidationProblem) {
        if IPAddress.parse(text) != nil || HostAddress.isHostname(text) {
            value = text
        } else {
            throw ValidationProblem("\(field) \(Quote.show(text)) is not an IP address or a host name")
        }
    }

    static func isHostname(_ text: String) -> Bool {
        guard !text.isEmpty, text.count <= 253 else { return false }
        return text.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { label in
            !label.isEmpty && label.count <= 63 && !label.hasPrefix("-") && !label.hasSuffix("-")
                && label.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || $0 == "-" }
        } && !text.unicodeScalars.allSatisfy { ("0"..."9").contains($0) || $0 == "." }
    }

    public var description: String { value }
}

/// A TCP port, 1–65535.
public struct TCPPort: Sendable, Hashable, CustomStringConvertible {
    public let value: Int
    public init(_ value: Int, field: String = "port") throws(ValidationProblem) {
        guard (1...65535).contains(value) else { throw ValidationProblem("\(field) \(value) must be from 1 to 65535") }
        self.value = value
    }
    public init(parsing text: String, field: String = "port") throws(ValidationProblem) {
        guard let n = Int(text) else { throw ValidationProblem("\(field) \(Quote.show(text)) is not a number") }
        try self.init(n, field: field)
    }
    public var description: String { String(value) }
}

/// An absolute file-system path that is safe to write into a config file or pass as an argument:
/// no control characters, quotes, backslashes or spaces at the ends.
public struct SafePath: Sendable, Hashable, CustomStringConvertible {
    public let value: String
    public init(_ text: String, field: String = "path") throws(ValidationProblem) {
        guard text.hasPrefix("/") else { throw ValidationProblem("\(field) \(Quote.show(text)) must be an absolute path") }
        guard !text.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F || $0 == "'" || $0 == "\"" || $0 == "\\" }),
            text.trimmingCharacters(in: .whitespaces) == text, !text.split(separator: "/").contains("..")
        else {
            throw ValidationProblem("\(field) \(Quote.show(text)) contains a character Baton does not write into config files (control characters, quotes, backslashes, '..' or spaces at the ends)")
        }
        value = text
    }
    public var description: String { value }
}

/// An IPv4 or IPv6 address, parsed.
public enum IPAddress: Sendable, Hashable {
    case v4([UInt8])
    case v6([UInt8])

    public static func parse(_ text: String) -> IPAddress? {
        if let v4 = parseV4(text) { return .v4(v4) }
        if let v6 = parseV6(text) { return .v6(v6) }
        return nil
    }

    public var bytes: [UInt8] {
        switch self {
        case .v4(let b), .v6(let b): return b
        }
    }

    static func parseV4(_ text: String) -> [UInt8]? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var out: [UInt8] = []
        for p in parts {
            guard !p.isEmpty, p.count <= 3, p.allSatisfy(\.isASCII), p.allSatisfy(\.isNumber), let n = UInt8(p),
                !(p.count > 1 && p.hasPrefix("0"))
            else { return nil }
            out.append(n)
        }
        return out
    }

    static func parseV6(_ text: String) -> [UInt8]? {
        guard text.contains(":"), text.unicodeScalars.allSatisfy({ $0.properties.isASCIIHexDigit || $0 == ":" || $0 == "." }) else { return nil }
        let halves = text.components(separatedBy: "::")
        guard halves.count <= 2 else { return nil }
        func groups(_ s: String) -> [UInt16]? {
            if s.isEmpty { return [] }
            var out: [UInt16] = []
            let parts = s.split(separator: ":", omittingEmptySubsequences: false)
            for (i, p) in parts.enumerated() {
                if i == parts.count - 1, p.contains("."), let v4 = parseV4(String(p)) {
                    out.append(UInt16(v4[0]) << 8 | UInt16(v4[1]))
                    out.append(UInt16(v4[2]) << 8 | UInt16(v4[3]))
                } else {
                    guard !p.isEmpty, p.count <= 4, let g = UInt16(p, radix: 16) else { return nil }
                    out.append(g)
                }
            }
            return out
        }
        guard let head = groups(halves[0]) else { return nil }
        var all = head
        if halves.count == 2 {
            guard let tail = groups(halves[1]), head.count + tail.count < 8 else { return nil }
            all += Array(repeating: 0, count: 8 - head.count - tail.count) + tail
        }
        guard all.count == 8 else { return nil }
        return all.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xFF)] }
    }
}

/// A network in CIDR form, e.g. `198.18.0.0/24` or `10.1.2.3/32`.
public struct CIDR: Sendable, Hashable, CustomStringConvertible {
    public let address: IPAddress
    public let prefixLength: Int
    public let text: String

    public init(_ text: String, field: String = "CIDR") throws(ValidationProblem) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let address = IPAddress.parse(String(parts[0])), let length = Int(parts[1]), parts[1].allSatisfy(\.isNumber)
        else {
            throw ValidationProblem("\(field) \(Quote.show(text)) is not an address/prefix-length such as 198.18.0.10/24")
        }
        let maximum = address.bytes.count * 8
        guard (0...maximum).contains(length) else {
            throw ValidationProblem("\(field) \(Quote.show(text)): the prefix length must be 0 to \(maximum)")
        }
        self.address = address
        self.prefixLength = length
        self.text = text
    }

    /// The address written alone (for a virtual IP, e.g. `198.18.0.100`).
    public var host: String { String(text.split(separator: "/")[0]) }

    /// Whether `other` lies inside this network.
    public func contains(_ other: IPAddress) -> Bool {
        let a = address.bytes, b = other.bytes
        guard a.count == b.count else { return false }
        var bits = prefixLength
        for i in 0..<a.count where bits > 0 {
            let take = min(8, bits)
            let mask = UInt8(truncatingIfNeeded: 0xFF << (8 - take))
            if a[i] & mask != b[i] & mask { return false }
            bits -= take
        }
        return true
    }

    public var description: String { text }
}

/// Shows a value in an error message with its control characters escaped, so that a hostile value
/// cannot forge log lines.
public enum Quote {
    public static func show(_ text: String) -> String {
        var out = "\""
        for s in text.unicodeScalars {
            switch s {
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\"": out += "\\\""
            default:
                if s.value < 0x20 || s.value == 0x7F { out += String(format: "\\x%02x", s.value) } else { out.unicodeScalars.append(s) }
            }
        }
        return out + "\""
    }
}
