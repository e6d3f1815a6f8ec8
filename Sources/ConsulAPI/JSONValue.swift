/// A JSON document as Consul reads and writes it.
///
/// Numbers keep their literal text, so a `Flags` value above 2^53 survives a round trip exactly, and
/// object members keep their order, so output can follow Consul's field order. Member lookup by
/// ``JSONValue/member(_:)`` ignores case, as Go's `encoding/json` does when Consul decodes a request.
public enum JSONValue: Sendable, Equatable {
    case null
    case bool(Bool)
    /// The number's literal text, e.g. `"3304740253564472344"` or `"1.5e3"`.
    case number(String)
    case string(String)
    case array([JSONValue])
    case object([(String, JSONValue)])

    public static func == (lhs: JSONValue, rhs: JSONValue) -> Bool {
        switch (lhs, rhs) {
        case (.null, .null): return true
        case let (.bool(a), .bool(b)): return a == b
        case let (.number(a), .number(b)): return a == b
        case let (.string(a), .string(b)): return a == b
        case let (.array(a), .array(b)): return a == b
        case let (.object(a), .object(b)):
            return a.count == b.count && zip(a, b).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default: return false
        }
    }

    public static func int<T: BinaryInteger>(_ value: T) -> JSONValue { .number(String(value)) }

    /// The member named `name`, compared without regard to case (an exact match wins).
    public func member(_ name: String) -> JSONValue? {
        guard case .object(let members) = self else { return nil }
        if let exact = members.first(where: { $0.0 == name }) { return exact.1 }
        let lowered = name.lowercased()
        return members.first(where: { $0.0.lowercased() == lowered })?.1
    }

    /// The first member found under any of `names` (case-insensitive), for fields with aliases.
    public func member(anyOf names: [String]) -> JSONValue? {
        for name in names { if let value = member(name) { return value } }
        return nil
    }

    public var stringValue: String? { if case .string(let s) = self { return s } else { return nil } }
    public var boolValue: Bool? { if case .bool(let b) = self { return b } else { return nil } }
    public var arrayValue: [JSONValue]? { if case .array(let a) = self { return a } else { return nil } }
    public var objectValue: [(String, JSONValue)]? { if case .object(let o) = self { return o } else { return nil } }
    public var isNull: Bool { if case .null = self { return true } else { return false } }

    public var uint64Value: UInt64? { if case .number(let n) = self { return UInt64(n) } else { return nil } }
    public var int64Value: Int64? {
        guard case .number(let n) = self else { return nil }
        if let exact = Int64(n) { return exact }
        if let d = Double(n), d.rounded() == d, abs(d) < 9.2e18 { return Int64(d) }
        return nil
    }
    public var doubleValue: Double? { if case .number(let n) = self { return Double(n) } else { return nil } }
}

// MARK: - Serialising

extension JSONValue {
    /// Compact JSON text, as Consul emits by default.
    public func serialized() -> String {
        var out = ""
        write(to: &out)
        return out
    }

    public func serializedBytes() -> [UInt8] { Array(serialized().utf8) }

    private func write(to out: inout String) {
        switch self {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .number(let n): out += n
        case .string(let s): JSONValue.writeString(s, to: &out)
        case .array(let items):
            out += "["
            for (i, item) in items.enumerated() {
                if i > 0 { out += "," }
                item.write(to: &out)
            }
            out += "]"
        case .object(let members):
            out += "{"
            for (i, (key, value)) in members.enumerated() {
                if i > 0 { out += "," }
                JSONValue.writeString(key, to: &out)
                out += ":"
                value.write(to: &out)
            }
            out += "}"
        }
    }

    private static func writeString(_ s: String, to out: inout String) {
        out += "\""
        // Most strings need no escape: appended whole.
        guard s.utf8.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") || $0 == UInt8(ascii: "<") || $0 == UInt8(ascii: ">") || $0 == UInt8(ascii: "&") })
        else {
            out += s
            out += "\""
            return
        }
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "<": out += "\\u003c"
            case ">": out += "\\u003e"
            case "&": out += "\\u0026"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        out += "\""
    }
}

// MARK: - Parsing

/// Why a JSON text could not be read, worded like Go's decoder so clients see familiar messages.
public struct JSONParseError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

extension JSONValue {
    /// Parses one JSON document; anything after it but whitespace is an error.
    public static func parse(_ bytes: [UInt8]) throws(JSONParseError) -> JSONValue {
        var parser = Parser(bytes: bytes)
        parser.skipWhitespace()
        let value = try parser.parseValue(depth: 0)
        parser.skipWhitespace()
        if parser.position != bytes.count {
            throw JSONParseError(message: "invalid character '\(parser.character)' after top-level value")
        }
        return value
    }

    public static func parse(_ text: String) throws(JSONParseError) -> JSONValue {
        try parse(Array(text.utf8))
    }

    private struct Parser {
        let bytes: [UInt8]
        var position = 0

        var character: String {
            position < bytes.count ? String(decoding: [bytes[position]], as: UTF8.self) : "EOF"
        }

        mutating func skipWhitespace() {
            while position < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[position]) { position += 1 }
        }

        func unexpected() -> JSONParseError {
            position >= bytes.count
                ? JSONParseError(message: "unexpected EOF")
                : JSONParseError(message: "invalid character '\(character)' looking for beginning of value")
        }

        mutating func parseValue(depth: Int) throws(JSONParseError) -> JSONValue {
            guard depth < 512 else { throw JSONParseError(message: "exceeded max depth") }
            guard position < bytes.count else { throw JSONParseError(message: "unexpected EOF") }
            switch bytes[position] {
            case UInt8(ascii: "{"): return try parseObject(depth: depth)
            case UInt8(ascii: "["): return try parseArray(depth: depth)
            case UInt8(ascii: "\""): return .string(try parseString())
            case UInt8(ascii: "t"): try literal("true"); return .bool(true)
            case UInt8(ascii: "f"): try literal("false"); return .bool(false)
            case UInt8(ascii: "n"): try literal("null"); return .null
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try parseNumber())
            default: throw unexpected()
            }
        }

        mutating func literal(_ word: String) throws(JSONParseError) {
            let w = Array(word.utf8)
            guard position + w.count <= bytes.count else { throw JSONParseError(message: "unexpected EOF") }
            guard Array(bytes[position..<position + w.count]) == w else {
                throw JSONParseError(message: "invalid character '\(character)' in literal \(word)")
            }
            position += w.count
        }

        mutating func parseNumber() throws(JSONParseError) -> String {
            let start = position
            if bytes[position] == UInt8(ascii: "-") { position += 1 }
            func digits(_ p: inout Int, _ b: [UInt8]) -> Int {
                let s = p
                while p < b.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(b[p]) { p += 1 }
                return p - s
            }
            guard digits(&position, bytes) > 0 else { throw unexpected() }
            if position < bytes.count, bytes[position] == UInt8(ascii: ".") {
                position += 1
                guard digits(&position, bytes) > 0 else { throw unexpected() }
            }
            if position < bytes.count, bytes[position] == UInt8(ascii: "e") || bytes[position] == UInt8(ascii: "E") {
                position += 1
                if position < bytes.count, bytes[position] == UInt8(ascii: "+") || bytes[position] == UInt8(ascii: "-") {
                    position += 1
                }
                guard digits(&position, bytes) > 0 else { throw unexpected() }
            }
            return String(decoding: bytes[start..<position], as: UTF8.self)
        }

        mutating func parseString() throws(JSONParseError) -> String {
            position += 1  // opening quote
            // Most strings have no escape: one pass to the closing quote, one decoding.
            var end = position
            while end < bytes.count, bytes[end] != UInt8(ascii: "\""), bytes[end] != UInt8(ascii: "\\"), bytes[end] >= 0x20 { end += 1 }
            if end < bytes.count, bytes[end] == UInt8(ascii: "\"") {
                let text = String(decoding: bytes[position..<end], as: UTF8.self)
                position = end + 1
                return text
            }
            var scalars = String.UnicodeScalarView()
            var run: [UInt8] = []
            func flush(_ run: inout [UInt8], _ scalars: inout String.UnicodeScalarView) {
                if !run.isEmpty { scalars.append(contentsOf: String(decoding: run, as: UTF8.self).unicodeScalars) }
                run.removeAll(keepingCapacity: true)
            }
            while true {
                guard position < bytes.count else { throw JSONParseError(message: "unexpected EOF") }
                let b = bytes[position]
                if b == UInt8(ascii: "\"") {
                    position += 1
                    flush(&run, &scalars)
                    return String(scalars)
                }
                if b < 0x20 { throw JSONParseError(message: "invalid character in string literal") }
                if b != UInt8(ascii: "\\") {
                    run.append(b)
                    position += 1
                    continue
                }
                flush(&run, &scalars)
                position += 1
                guard position < bytes.count else { throw JSONParseError(message: "unexpected EOF") }
                let e = bytes[position]
                position += 1
                switch e {
                case UInt8(ascii: "\""): scalars.append("\"")
                case UInt8(ascii: "\\"): scalars.append("\\")
                case UInt8(ascii: "/"): scalars.append("/")
                case UInt8(ascii: "b"): scalars.append("\u{08}")
                case UInt8(ascii: "f"): scalars.append("\u{0C}")
                case UInt8(ascii: "n"): scalars.append("\n")
                case UInt8(ascii: "r"): scalars.append("\r")
                case UInt8(ascii: "t"): scalars.append("\t")
                case UInt8(ascii: "u"):
                    var code = try hex4()
                    if (0xD800..<0xDC00).contains(code), position + 1 < bytes.count,
                        bytes[position] == UInt8(ascii: "\\"), bytes[position + 1] == UInt8(ascii: "u")
                    {
                        position += 2
                        let low = try hex4()
                        if (0xDC00..<0xE000).contains(low) {
                            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                        } else {
                            scalars.append("\u{FFFD}")
                            code = low
                        }
                    }
                    scalars.append(Unicode.Scalar(code) ?? "\u{FFFD}")
                default:
                    throw JSONParseError(message: "invalid character in string escape code")
                }
            }
        }

        mutating func hex4() throws(JSONParseError) -> UInt32 {
            guard position + 4 <= bytes.count else { throw JSONParseError(message: "unexpected EOF") }
            let text = String(decoding: bytes[position..<position + 4], as: UTF8.self)
            guard let v = UInt32(text, radix: 16) else {
                throw JSONParseError(message: "invalid character in \\u hexadecimal character escape")
            }
            position += 4
            return v
        }

        mutating func parseArray(depth: Int) throws(JSONParseError) -> JSONValue {
            position += 1
            var items: [JSONValue] = []
            skipWhitespace()
            if position < bytes.count, bytes[position] == UInt8(ascii: "]") {
                position += 1
                return .array(items)
            }
            while true {
                skipWhitespace()
                items.append(try parseValue(depth: depth + 1))
                skipWhitespace()
                guard position < bytes.count else { throw JSONParseError(message: "unexpected EOF") }
                if bytes[position] == UInt8(ascii: ",") { position += 1; continue }
                if bytes[position] == UInt8(ascii: "]") { position += 1; return .array(items) }
                throw JSONParseError(message: "invalid character '\(character)' after array element")
            }
        }

        mutating func parseObject(depth: Int) throws(JSONParseError) -> JSONValue {
            position += 1
            var members: [(String, JSONValue)] = []
            skipWhitespace()
            if position < bytes.count, bytes[position] == UInt8(ascii: "}") {
                position += 1
                return .object(members)
            }
            while true {
                skipWhitespace()
                guard position < bytes.count else { throw JSONParseError(message: "unexpected EOF") }
                guard bytes[position] == UInt8(ascii: "\"") else {
                    throw JSONParseError(message: "invalid character '\(character)' looking for beginning of object key string")
                }
                let key = try parseString()
                skipWhitespace()
                guard position < bytes.count else { throw JSONParseError(message: "unexpected EOF") }
                guard bytes[position] == UInt8(ascii: ":") else {
                    throw JSONParseError(message: "invalid character '\(character)' after object key")
                }
                position += 1
                skipWhitespace()
                let value = try parseValue(depth: depth + 1)
                if let i = members.firstIndex(where: { $0.0 == key }) { members[i].1 = value } else { members.append((key, value)) }
                skipWhitespace()
                guard position < bytes.count else { throw JSONParseError(message: "unexpected EOF") }
                if bytes[position] == UInt8(ascii: ",") { position += 1; continue }
                if bytes[position] == UInt8(ascii: "}") { position += 1; return .object(members) }
                throw JSONParseError(message: "invalid character '\(character)' after object key:value pair")
            }
        }
    }
}
