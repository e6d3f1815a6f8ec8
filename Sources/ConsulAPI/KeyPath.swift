/// The rules for KV keys and URL path segments that Consul's client and server share.
public enum KeyPath {
    /// Why `key` may not be written to Consul, or `nil` if it may.
    ///
    /// Permissive like Consul before 1.21.5 but for what every version refuses or mangles: an empty key
    /// (where one is required), a leading `/`, a `..` segment, an empty `//` segment (Go's HTTP mux
    /// redirects such paths), and control characters.
    public static func problem(with key: String, allowEmpty: Bool = false) -> String? {
        if key.isEmpty { return allowEmpty ? nil : "Missing key name" }
        if key.hasPrefix("/") { return "key must not begin with a '/'" }
        if key.split(separator: "/", omittingEmptySubsequences: false).contains("..") {
            return "key must not contain a '..' path segment"
        }
        if key.utf8.contains("//".utf8) { return "key must not contain an empty path segment ('//')" }
        if key.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) {
            return "key must not contain control characters"
        }
        return nil
    }

    /// Percent-encodes `text` for a URL path, keeping `/` when `keepSlash` (KV keys) and escaping it
    /// otherwise (service and check IDs such as `batman/pg0`).
    public static func escape(_ text: String, keepSlash: Bool = true) -> String {
        var out = ""
        for byte in text.utf8 {
            let c = Character(Unicode.Scalar(byte))
            let unreserved =
                (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                || "-._~:@".utf8.contains(byte) || (keepSlash && byte == UInt8(ascii: "/"))
            if unreserved {
                out.append(c)
            } else {
                let hex = String(byte, radix: 16, uppercase: true)
                out += "%" + (hex.count == 1 ? "0" + hex : hex)
            }
        }
        return out
    }

    /// Decodes `%XX` escapes; `nil` when an escape is malformed. `+` stays `+` (paths, not forms).
    public static func unescape(_ text: String, plusAsSpace: Bool = false) -> String? {
        var bytes: [UInt8] = []
        let utf8 = Array(text.utf8)
        var i = 0
        while i < utf8.count {
            let b = utf8[i]
            if b == UInt8(ascii: "%") {
                guard i + 2 < utf8.count, let v = UInt8(String(decoding: utf8[i + 1...i + 2], as: UTF8.self), radix: 16)
                else { return nil }
                bytes.append(v)
                i += 3
            } else {
                bytes.append(plusAsSpace && b == UInt8(ascii: "+") ? UInt8(ascii: " ") : b)
                i += 1
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
