import Foundation

/// A secret (an ACL token) that never prints itself.
public struct Secret: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible {
    public let value: String
    public init(_ value: String) { self.value = value }
    public var description: String { "<redacted>" }
    public var debugDescription: String { "<redacted>" }
}

/// One Consul HTTP endpoint, e.g. `http://127.0.0.1:8500`.
public struct ConsulAddress: Sendable, Equatable, CustomStringConvertible {
    public var scheme: String
    public var host: String
    public var port: Int

    public var description: String {
        let h = host.contains(":") ? "[\(host)]" : host
        return "\(scheme)://\(h):\(port)"
    }

    /// Parses `host:port`, `http://host:port` or `https://host[:port]`, as CONSUL_HTTP_ADDR accepts.
    public init(parsing text: String, defaultScheme: String = "http") throws(ConsulError) {
        var rest = text.trimmingCharacters(in: .whitespaces)
        var scheme = defaultScheme
        if let range = rest.range(of: "://") {
            scheme = rest[..<range.lowerBound].lowercased()
            rest = String(rest[range.upperBound...])
        }
        if rest.hasSuffix("/") { rest.removeLast() }
        guard scheme == "http" || scheme == "https" else {
            throw ConsulError(.invalidArgument, "Consul address \"\(text)\": the scheme must be http or https")
        }
        var host = rest
        var port = scheme == "https" ? 8501 : 8500
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else {
                throw ConsulError(.invalidArgument, "Consul address \"\(text)\": unclosed '[' in an IPv6 address")
            }
            host = String(rest[rest.index(after: rest.startIndex)..<close])
            let after = rest[rest.index(after: close)...]
            if after.hasPrefix(":") {
                guard let p = Int(after.dropFirst()), (1...65535).contains(p) else {
                    throw ConsulError(.invalidArgument, "Consul address \"\(text)\": the port must be 1-65535")
                }
                port = p
            }
        } else if let colon = rest.lastIndex(of: ":") {
            host = String(rest[..<colon])
            guard let p = Int(rest[rest.index(after: colon)...]), (1...65535).contains(p) else {
                throw ConsulError(.invalidArgument, "Consul address \"\(text)\": the port must be 1-65535")
            }
            port = p
        }
        let allowed = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: ".-_:"))
        guard !host.isEmpty, host.unicodeScalars.allSatisfy({ allowed.contains($0) && $0.isASCII }) else {
            throw ConsulError(.invalidArgument, "Consul address \"\(text)\": \"\(host)\" is not a host name or IP address")
        }
        self.scheme = scheme
        self.host = host
        self.port = port
    }
}

/// How to reach Consul: set the way Consul's own tools are (CONSUL_HTTP_ADDR and friends), by flags,
/// or by a config file.
public struct ConsulConfiguration: Sendable, Equatable, CustomStringConvertible {
    /// Tried in turn; the first that answers is used until it stops answering.
    public var addresses: [ConsulAddress]
    public var token: Secret?
    public var tls: TLSFiles
    /// Timeout of a call that is not a blocking query.
    public var requestTimeout: Duration

    public init(
        addresses: [ConsulAddress] = [try! ConsulAddress(parsing: "127.0.0.1:8500")], token: Secret? = nil,
        tls: TLSFiles = TLSFiles(), requestTimeout: Duration = .seconds(5)
    ) {
        self.addresses = addresses
        self.token = token
        self.tls = tls
        self.requestTimeout = requestTimeout
    }

    public var description: String {
        "addresses=\(addresses.map(\.description).joined(separator: ",")) token=\(token == nil ? "none" : "<redacted>")"
    }

    /// Reads CONSUL_HTTP_ADDR (comma-separated, tried in turn), CONSUL_HTTP_TOKEN,
    /// CONSUL_HTTP_TOKEN_FILE, CONSUL_HTTP_SSL, CONSUL_CACERT, CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY;
    /// explicit values (flags, config) override the environment.
    /// - Throws: ``ConsulError`` with code `invalidArgument` for a malformed address, an unreadable
    ///   token file or a TLS file that does not exist.
    public static func resolve(
        environment: [String: String] = ProcessInfo.processInfo.environment, address: String? = nil,
        tokenFile: String? = nil, ssl: Bool? = nil, caFile: String? = nil, certFile: String? = nil,
        keyFile: String? = nil
    ) throws(ConsulError) -> ConsulConfiguration {
        let useSSL: Bool
        if let ssl {
            useSSL = ssl
        } else if let raw = environment["CONSUL_HTTP_SSL"], !raw.isEmpty {
            switch raw.lowercased() {
            case "1", "t", "true": useSSL = true
            case "0", "f", "false": useSSL = false
            default: throw ConsulError(.invalidArgument, "CONSUL_HTTP_SSL=\(raw) is not a boolean (use true or false)")
            }
        } else {
            useSSL = false
        }
        let addressText = address ?? environment["CONSUL_HTTP_ADDR"].flatMap { $0.isEmpty ? nil : $0 } ?? "127.0.0.1:8500"
        var addresses: [ConsulAddress] = []
        for part in addressText.split(separator: ",") where !part.trimmingCharacters(in: .whitespaces).isEmpty {
            addresses.append(try ConsulAddress(parsing: String(part), defaultScheme: useSSL ? "https" : "http"))
        }
        guard !addresses.isEmpty else { throw ConsulError(.invalidArgument, "no Consul address given") }

        var token: Secret? = nil
        if let file = tokenFile ?? environment["CONSUL_HTTP_TOKEN_FILE"].flatMap({ $0.isEmpty ? nil : $0 }) {
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
                throw ConsulError(.invalidArgument, "cannot read the Consul token file \(file): check that it exists and is readable")
            }
            let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !trimmed.isEmpty else { throw ConsulError(.invalidArgument, "the Consul token file \(file) is empty") }
            token = Secret(trimmed)
        } else if let value = environment["CONSUL_HTTP_TOKEN"], !value.isEmpty {
            token = Secret(value)
        }
        if let t = token, t.value.contains(where: { $0.isNewline || $0 == "\0" }) {
            throw ConsulError(.invalidArgument, "the Consul token contains a line break; it cannot be sent in a header")
        }
        var tls = TLSFiles(
            caFile: caFile ?? environment["CONSUL_CACERT"].flatMap { $0.isEmpty ? nil : $0 },
            certFile: certFile ?? environment["CONSUL_CLIENT_CERT"].flatMap { $0.isEmpty ? nil : $0 },
            keyFile: keyFile ?? environment["CONSUL_CLIENT_KEY"].flatMap { $0.isEmpty ? nil : $0 })
        for (name, path) in [("CA certificate", tls.caFile), ("client certificate", tls.certFile), ("client key", tls.keyFile)] {
            if let path, !FileManager.default.isReadableFile(atPath: path) {
                throw ConsulError(.invalidArgument, "the Consul \(name) \(path) does not exist or is not readable")
            }
        }
        if (tls.certFile == nil) != (tls.keyFile == nil) {
            throw ConsulError(.invalidArgument, "a Consul client certificate needs its key too (CONSUL_CLIENT_CERT with CONSUL_CLIENT_KEY)")
        }
        if tls.caFile == nil && tls.certFile == nil { tls = TLSFiles() }
        return ConsulConfiguration(addresses: addresses, token: token, tls: tls)
    }
}
