import ConsulAPI

/// What `baton report` leaves out of what it collects: values that look like secrets.
public enum Redaction {
    public static let marker = "[redacted]"

    /// Whether a field of that name holds a secret (`password`, `replication_password`, `token`,
    /// `secret`, `private_key` …).
    public static func isSecret(field name: String) -> Bool {
        let lower = name.lowercased()
        return ["password", "passwd", "secret", "token", "private_key", "privatekey"].contains { lower.contains($0) }
    }

    /// A JSON value with every member whose name is a secret's replaced, at any depth, and conninfo
    /// passwords in strings removed.
    public static func redact(_ value: JSONValue) -> JSONValue {
        switch value {
        case .object(let members):
            return .object(members.map { name, member in (name, isSecret(field: name) ? .string(marker) : redact(member)) })
        case .array(let items):
            return .array(items.map(redact))
        case .string(let text):
            return .string(redact(text: text))
        default:
            return value
        }
    }

    /// Text with `password=…` (a libpq conninfo, quoted or not) and `PASSWORD '…'` (SQL) replaced, and a
    /// `postgres://user:password@` URL's password.
    public static func redact(text: String) -> String {
        var out = ""
        var rest = Substring(text)
        while let range = firstSecret(in: rest) {
            out += rest[..<range.lowerBound] + marker
            rest = rest[range.upperBound...]
        }
        return out + rest
    }

    /// The range of the first secret value in `text`, after its keyword.
    static func firstSecret(in text: Substring) -> Range<Substring.Index>? {
        let lower = text.lowercased()
        var best: Range<Substring.Index>? = nil
        func consider(_ range: Range<Substring.Index>) {
            if best == nil || range.lowerBound < best!.lowerBound { best = range }
        }
        // Offsets found in the lowercased copy map to the same offsets in `text` (ASCII keywords).
        func index(_ offset: Int) -> Substring.Index { text.index(text.startIndex, offsetBy: offset) }
        for keyword in ["password=", "password =", "password '", "password \""] {
            guard let found = lower.range(of: keyword) else { continue }
            let start = lower.distance(from: lower.startIndex, to: found.upperBound)
            let valueStart = index(start)
            let quote = keyword.last == "'" || keyword.last == "\"" ? keyword.last : text[valueStart...].first.flatMap { $0 == "'" || $0 == "\"" ? $0 : nil }
            if let quote {
                let opening = keyword.last == quote ? valueStart : text.index(after: valueStart)
                let closing = text[opening...].firstIndex(of: quote) ?? text.endIndex
                consider(opening..<closing)
            } else {
                consider(valueStart..<(text[valueStart...].firstIndex { $0 == " " || $0 == "\n" || $0 == "&" || $0 == ";" } ?? text.endIndex))
            }
        }
        // postgres://user:secret@host
        if let scheme = lower.range(of: "://") {
            let afterScheme = index(lower.distance(from: lower.startIndex, to: scheme.upperBound))
            let authority = text[afterScheme...].prefix { $0 != "/" && $0 != " " && $0 != "\n" }
            if let at = authority.lastIndex(of: "@"), let colon = authority[..<at].firstIndex(of: ":") {
                consider(text.index(after: colon)..<at)
            }
        }
        return best
    }
}
