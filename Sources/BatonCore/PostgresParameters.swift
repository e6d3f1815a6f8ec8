import ConsulAPI
import Foundation

/// Cluster-wide PostgreSQL parameters (`baton config set postgresql.NAME=VALUE`), in the Consul key
/// `postgresql`: every monitor writes them to `baton-parameters.conf` in its data directory (included
/// from postgresql.conf before `baton.conf`, so Baton's own settings always win) and reloads.
public struct PostgresParameters: Sendable, Equatable {
    public static let file = "baton-parameters.conf"
    public static let includeLine = "include_if_exists = 'baton-parameters.conf'\t# added by baton"

    /// By name, values as PostgreSQL accepts them in a configuration file (before quoting).
    public private(set) var values: [String: String] = [:]

    public init(_ values: [String: String] = [:]) { self.values = values }

    /// What bootstrap stores when it creates a cluster: a bound on the WAL a replication slot may hold
    /// back, so that a node that is gone for good cannot fill the primary's disk.
    public static let defaultMaxSlotWalKeepSize = "8GB"

    /// Parameters Baton sets itself (in `baton.conf`) or relies on: a cluster-wide value would be
    /// overridden, or would break replication, failover or fencing.
    public static let owned: [String: String] = {
        var owned: [String: String] = [:]
        for name in [
            "listen_addresses", "port", "unix_socket_directories", "wal_level", "max_wal_senders", "max_replication_slots", "hot_standby",
            "hot_standby_feedback", "wal_log_hints", "wal_keep_size", "wal_retrieve_retry_interval", "password_encryption",
        ] {
            owned[name] = "Baton sets it in baton.conf on every node (replication, pg_rewind and failover depend on it)"
        }
        for name in ["primary_conninfo", "primary_slot_name", "synchronous_standby_names"] {
            owned[name] = "Baton sets it as nodes follow the primary and as synchronous_mode decides (use `baton config set synchronous_mode=…`)"
        }
        for name in ["archive_mode", "archive_command", "archive_library"] {
            owned[name] = "Baton sets it in baton.conf when the cluster archives with pgBackRest (bootstrap --backup pgbackrest); only the primary archives"
        }
        owned["synchronous_commit"] = "synchronous_mode's guarantee (no acknowledged commit lost) depends on it"
        for name in ["data_directory", "config_file", "hba_file", "ident_file", "external_pid_file", "include", "include_if_exists", "include_dir"] {
            owned[name] = "it names files of each node; set it in that node's postgresql.conf"
        }
        for name in [
            "restore_command", "recovery_target", "recovery_target_name", "recovery_target_time", "recovery_target_xid", "recovery_target_lsn",
            "recovery_target_inclusive", "recovery_target_timeline", "recovery_target_action", "promote_trigger_file",
        ] {
            owned[name] = "recovery settings would change how standbys follow and promote"
        }
        return owned
    }()

    /// A parameter name as PostgreSQL spells it (lower case; a dot for an extension's `prefix.name`).
    public static func checkName(_ name: String) throws(ValidationProblem) {
        guard !name.isEmpty, name.count <= 63, let first = name.unicodeScalars.first, ("a"..."z").contains(first),
            name.unicodeScalars.allSatisfy({ ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "_" || $0 == "." })
        else {
            throw ValidationProblem("\(Quote.show(name)) is not a PostgreSQL parameter name (lower-case letters, digits, '_' and '.')")
        }
        if let reason = owned[name] { throw ValidationProblem("postgresql.\(name) cannot be set cluster-wide: \(reason)") }
    }

    /// A value fit for a configuration file line: no line breaks or control characters.
    public static func checkValue(_ value: String, name: String) throws(ValidationProblem) {
        guard value.count <= 4096, !value.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else {
            throw ValidationProblem("the value of postgresql.\(name) must be one line without control characters, at most 4096 characters")
        }
    }

    public func setting(_ name: String, to value: String?) throws(ValidationProblem) -> PostgresParameters {
        try Self.checkName(name)
        var next = self
        if let value {
            try Self.checkValue(value, name: name)
            next.values[name] = value
        } else {
            next.values[name] = nil
        }
        return next
    }

    public var json: JSONValue { .object(values.keys.sorted().map { ($0, .string(values[$0]!)) }) }

    /// Reads the key; names and values are validated as `config set` does (someone else may have written it).
    public init(bytes: [UInt8]?, key: String) throws(ValidationProblem) {
        guard let bytes, !bytes.isEmpty else { return }
        let json = try Record.object(bytes, key: key)
        for (name, value) in json.objectValue ?? [] {
            guard let text = value.stringValue else { throw ValidationProblem("Consul key \(key): \(name) must be a string") }
            do {
                try Self.checkName(name)
                try Self.checkValue(text, name: name)
            } catch { throw ValidationProblem("Consul key \(key): \(error.message)") }
            values[name] = text
        }
    }

    /// `baton-parameters.conf`: one quoted line per parameter.
    public var fileText: String {
        var text = "# Managed by baton from the Consul key `postgresql` (baton config set postgresql.NAME=VALUE); rewritten by the monitor.\n"
        for name in values.keys.sorted() {
            let quoted = values[name]!.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "''")
            text += "\(name) = '\(quoted)'\n"
        }
        return text
    }
}

extension PostgresParameters {
    /// What changed from `previous`, for the event: `name=value` set, `-name` unset.
    public func changes(from previous: PostgresParameters?) -> String {
        let before = previous?.values ?? [:]
        var parts: [String] = []
        for name in Set(values.keys).union(before.keys).sorted() where values[name] != before[name] {
            parts.append(values[name].map { "\(name)=\($0)" } ?? "-\(name)")
        }
        return parts.joined(separator: " ")
    }
}

/// What PostgreSQL's `pg_settings` says about one parameter: enough to check a value as PostgreSQL
/// would, with PostgreSQL's own wording, before it is stored for every node.
public struct PostgresSettingDefinition: Sendable, Equatable {
    public enum Kind: String, Sendable { case bool, integer, real, string, `enum` }

    public var name: String
    public var kind: Kind
    /// The base unit (`kB`, `8kB`, `MB`, `ms`, `s`, `min`…), if any.
    public var unit: String?
    public var minimum: Double?
    public var maximum: Double?
    public var enumValues: [String]
    /// `postmaster`: a change needs a restart; `sighup` and lower: a reload.
    public var context: String

    public init(name: String, kind: Kind, unit: String?, minimum: Double?, maximum: Double?, enumValues: [String], context: String) {
        self.name = name
        self.kind = kind
        self.unit = unit
        self.minimum = minimum
        self.maximum = maximum
        self.enumValues = enumValues
        self.context = context
    }

    /// From a row of `SELECT name, vartype, unit, min_val, max_val, enumvals::text, context FROM pg_settings`.
    public init?(row: [String?]) {
        guard row.count == 7, let name = row[0], let kind = row[1].flatMap(Kind.init(rawValue:)) else { return nil }
        var values: [String] = []
        if let text = row[5], text.hasPrefix("{"), text.hasSuffix("}") {
            values = text.dropFirst().dropLast().split(separator: ",").map { $0.trimmingCharacters(in: CharacterSet(charactersIn: "\"")) }
        }
        self.init(
            name: name, kind: kind, unit: row[2], minimum: row[3].flatMap(Double.init), maximum: row[4].flatMap(Double.init), enumValues: values,
            context: row[6] ?? "")
    }

    public var needsRestart: Bool { context == "postmaster" }

    /// PostgreSQL 15's definition, for checking bootstrap's flag before any server runs.
    public static let maxSlotWalKeepSize = PostgresSettingDefinition(
        name: "max_slot_wal_keep_size", kind: .integer, unit: "MB", minimum: -1, maximum: 2_147_483_647, enumValues: [], context: "sighup")

    static let memoryUnits: [(String, Double)] = [("B", 1), ("kB", 1024), ("MB", 1_048_576), ("GB", 1_073_741_824), ("TB", 1_099_511_627_776)]
    static let timeUnits: [(String, Double)] = [("us", 0.001), ("ms", 1), ("s", 1000), ("min", 60_000), ("h", 3_600_000), ("d", 86_400_000)]

    /// The base unit in bytes or milliseconds, and the units a value may carry.
    var unitScale: (base: Double, units: [(String, Double)])? {
        guard let unit, !unit.isEmpty else { return nil }
        let digits = unit.prefix { $0.isNumber }
        let multiplier = Double(digits) ?? 1
        let name = String(unit.dropFirst(digits.count))
        if let scale = Self.memoryUnits.first(where: { $0.0 == name }) { return (multiplier * scale.1, Self.memoryUnits) }
        if let scale = Self.timeUnits.first(where: { $0.0 == name }) { return (multiplier * scale.1, Self.timeUnits) }
        return nil
    }

    /// Checks `value` as PostgreSQL's parser would (booleans, integers and reals with their units and
    /// range, enumerations); the message is PostgreSQL's own. Strings are taken as they are.
    public func check(_ value: String) throws(ValidationProblem) {
        let invalid = "invalid value for parameter \"\(name)\": \"\(value)\""
        switch kind {
        case .string:
            return
        case .bool:
            let v = value.trimmingCharacters(in: .whitespaces).lowercased()
            let accepted = ["on", "off", "true", "false", "yes", "no", "1", "0"]
            let prefixes = ["true", "false", "yes", "no"].filter { !v.isEmpty && $0.hasPrefix(v) }
            guard accepted.contains(v) || prefixes.count == 1 else { throw ValidationProblem("parameter \"\(name)\" requires a Boolean value") }
        case .enum:
            guard enumValues.contains(where: { $0.lowercased() == value.trimmingCharacters(in: .whitespaces).lowercased() }) else {
                throw ValidationProblem("\(invalid); available values: \(enumValues.joined(separator: ", "))")
            }
        case .integer, .real:
            let trimmed = value.trimmingCharacters(in: .whitespaces)
            let numberEnd = trimmed.firstIndex { !($0.isNumber || $0 == "." || $0 == "-" || $0 == "+" || $0 == "e" || $0 == "E") } ?? trimmed.endIndex
            guard var number = Double(trimmed[..<numberEnd]) else { throw ValidationProblem(invalid) }
            let suffix = trimmed[numberEnd...].trimmingCharacters(in: .whitespaces)
            if !suffix.isEmpty {
                guard let scale = unitScale else { throw ValidationProblem(invalid) }
                guard let unit = scale.units.first(where: { $0.0 == suffix }) else {
                    let names = scale.units.map { "\"\($0.0)\"" }
                    throw ValidationProblem(
                        "\(invalid); valid units for this parameter are \(names.dropLast().joined(separator: ", ")), and \(names.last!)")
                }
                number = number * unit.1 / scale.base
            }
            if kind == .integer {
                number = number.rounded()
                guard abs(number) < 2_147_483_648 else { throw ValidationProblem("\(invalid); value exceeds integer range") }
            }
            let unitText = unit.map { " \($0)" } ?? ""
            func show(_ d: Double) -> String { kind == .integer || d == d.rounded() ? String(Int64(d)) : String(d) }
            if let minimum, let maximum, number < minimum || number > maximum {
                throw ValidationProblem(
                    "\(show(number))\(unitText) is outside the valid range for parameter \"\(name)\" (\(show(minimum))\(unitText) .. \(show(maximum))\(unitText))")
            }
        }
    }
}
