import ArgumentParser
import BatonAgent
import BatonBootstrap
import BatonSettings
import BatonConsul
import BatonConsulServer
import ConsulAPI
import Foundation
import Logging

/// How to reach Consul, shared by every command that talks to it. Flags override the CONSUL_* variables.
struct ConsulOptions: ParsableArguments {
    @Option(name: .customLong("consul"), help: "Consul HTTP address(es), comma-separated, tried in turn (default: CONSUL_HTTP_ADDR or 127.0.0.1:8500).")
    var address: String?

    @Option(name: .customLong("consul-token-file"), help: "File holding the Consul ACL token (default: CONSUL_HTTP_TOKEN_FILE, then CONSUL_HTTP_TOKEN).")
    var tokenFile: String?

    @Flag(name: .customLong("consul-ssl"), help: "Use HTTPS for addresses without a scheme (default: CONSUL_HTTP_SSL).")
    var ssl = false

    @Option(name: .customLong("consul-cacert"), help: "CA certificate to verify Consul's TLS certificate (default: CONSUL_CACERT).")
    var caFile: String?

    @Option(name: .customLong("consul-client-cert"), help: "Client certificate for Consul (default: CONSUL_CLIENT_CERT).")
    var certFile: String?

    @Option(name: .customLong("consul-client-key"), help: "Client key for Consul (default: CONSUL_CLIENT_KEY).")
    var keyFile: String?

    func client() throws -> ConsulClient {
        do {
            let configuration = try ConsulConfiguration.resolve(
                address: address, tokenFile: tokenFile, ssl: ssl ? true : nil, caFile: caFile, certFile: certFile, keyFile: keyFile)
            return ConsulClient(configuration)
        } catch {
            throw ValidationError(error.message)
        }
    }
}

struct ConsulCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "consul",
        abstract: "The embedded Consul-compatible server, and a small Consul client.",
        subcommands: [Serve.self, KV.self, Snapshot.self, Fault.self]
    )
}

extension ConsulCommand {
    struct Serve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run the embedded single-node Consul-compatible server (HTTP API v1).",
            discussion: """
                For tests, demos and single machines where Consul cannot be installed. Writes are fsync'd to \
                --data-dir before they are acknowledged; a restart with the same directory keeps every key \
                and session.
                """
        )

        @Option(help: "HOST:PORT to listen on.")
        var listen = "127.0.0.1:8500"

        @Option(help: "Directory for the durable state (created 0700 if missing).")
        var dataDir: String

        @Option(help: "The node name the server reports.")
        var nodeName = "node1"

        @Option(help: "The datacenter name.")
        var datacenter = "dc1"

        @Option(help: "Require this ACL token on every request (prefer --acl-token-file: a command line is visible in ps).")
        var aclToken: String?

        @Option(help: "File holding the ACL token to require on every request.")
        var aclTokenFile: String?

        @Option(help: "The shortest session TTL accepted, as a Go duration (Consul's session_ttl_min).")
        var sessionTTLMin = "10s"

        @Option(help: "Serve the fault-control API on this loopback HOST:PORT (`baton consul fault`): drills and tests only.")
        var faultControl: String?

        @Option(help: "The address reported as the cluster leader (status/leader).")
        var advertise = "127.0.0.1"

        func validate() throws {
            _ = try listenAddress()
            if let faultControl {
                let (host, _) = try Self.hostPort(faultControl, flag: "--fault-control")
                guard FaultControlAddressError.isLoopback(host) else {
                    throw ValidationError("--fault-control \(faultControl): only a loopback address (127.0.0.1:PORT) may serve faults")
                }
            }
            let ttl: GoDuration
            do { ttl = try GoDuration(parsing: sessionTTLMin) } catch {
                throw ValidationError("--session-ttl-min \(sessionTTLMin): \(error.message)")
            }
            guard ttl > .zero, ttl <= .seconds(86_400) else {
                throw ValidationError("--session-ttl-min must be more than 0 and at most 24h")
            }
            guard !nodeName.isEmpty, nodeName.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == "." }) else {
                throw ValidationError("--node-name \"\(nodeName)\" may use only letters, digits, '-', '_' and '.'")
            }
            if aclToken != nil && aclTokenFile != nil { throw ValidationError("give --acl-token or --acl-token-file, not both") }
        }

        func listenAddress() throws -> (String, Int) { try Self.hostPort(listen, flag: "--listen") }

        static func hostPort(_ text: String, flag: String) throws -> (String, Int) {
            guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else {
                throw ValidationError("\(flag) \(text): expected HOST:PORT with a port from 0 to 65535")
            }
            let host = String(text[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
            guard !host.isEmpty else { throw ValidationError("\(flag) \(text): the host is missing") }
            return (host, port)
        }

        func run() async throws {
            Logs.bootstrap()
            let logger = Logger(label: "baton.consul")
            var token = aclToken
            if let aclTokenFile {
                guard let text = try? String(contentsOfFile: aclTokenFile, encoding: .utf8),
                    !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty
                else { throw ValidationError("cannot read a token from --acl-token-file \(aclTokenFile)") }
                token = text.trimmingCharacters(in: .whitespacesAndNewlines)
            }
            let (host, port) = try listenAddress()
            let settings = ServerSettings(
                nodeName: nodeName, datacenter: datacenter, sessionTTLMin: try GoDuration(parsing: sessionTTLMin), aclToken: token,
                advertiseAddress: advertise)
            let server: ConsulServer
            do {
                server = try await ConsulServer(
                    host: host, port: port, dataDirectory: dataDir, settings: settings,
                    faultControl: try faultControl.map { try Self.hostPort($0, flag: "--fault-control") }, logger: logger)
            } catch let error as DataDirectoryError {
                logger.error("Cannot start", metadata: ["error": "\(error.message)"])
                throw ExitCode(1)
            } catch {
                logger.error("Cannot listen", metadata: ["error": "\(error)", "consul.address": "\(listen)"])
                throw ExitCode(1)
            }
            await withDiscardingTaskGroup { group in
                group.addTask { await ResidentCodeTrimmer(logger: logger).run() }
                await Signals.waitForTermination()
                group.cancelAll()
            }
            logger.info("Shutting down")
            await server.shutdown()
        }
    }

    struct KV: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "kv", abstract: "Read and write Consul keys.", subcommands: [Get.self, Put.self, Delete.self, List.self])

        struct Get: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Print a key's value.")
            @OptionGroup var consul: ConsulOptions
            @Argument var key: String
            @Option(help: "Block until the key's ModifyIndex exceeds this index.") var index: UInt64 = 0
            @Flag(help: "Print the whole entry as JSON.") var detailed = false

            func run() async throws {
                let client = try consul.client()
                let result = try await client.get(key, QueryOptions(index: index, wait: .seconds(60)))
                guard let pair = result.value else {
                    FileHandle.standardError.write(Data("Error! No key exists at: \(key)\n".utf8))
                    throw ExitCode(1)
                }
                print(detailed ? pair.json.serialized() : pair.stringValue)
            }
        }

        struct Put: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Write a key.")
            @OptionGroup var consul: ConsulOptions
            @Argument var key: String
            @Argument var value: String
            @Option(help: "Only write if the key's ModifyIndex is this (0: only if it does not exist).") var cas: UInt64?

            func run() async throws {
                let client = try consul.client()
                let ok = try await client.put(key, value, mode: cas.map { .cas($0) } ?? .plain)
                guard ok else {
                    FileHandle.standardError.write(Data("Error! Did not write to \(key): check-and-set conflict\n".utf8))
                    throw ExitCode(1)
                }
                print("Success! Data written to: \(key)")
            }
        }

        struct Delete: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Delete a key, or every key under a prefix.")
            @OptionGroup var consul: ConsulOptions
            @Argument var key: String
            @Flag(help: "Delete every key that starts with KEY.") var recurse = false

            func run() async throws {
                let client = try consul.client()
                if recurse { try await client.deleteTree(key) } else { try await client.delete(key) }
                print("Success! Deleted key: \(key)")
            }
        }

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "List the keys and values under a prefix.")
            @OptionGroup var consul: ConsulOptions
            @Argument var prefix: String = ""

            func run() async throws {
                let client = try consul.client()
                for pair in try await client.list(prefix).value { print("\(pair.key):\(pair.stringValue)") }
            }
        }
    }

    struct Snapshot: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Save or restore the whole store of an embedded server (GET and PUT /v1/snapshot).",
            discussion: """
                save FILE      writes the store (keys, sessions, services, checks, indexes) to FILE, as JSON
                restore FILE   replaces the store with FILE's: keys, sessions and indexes roll back to it
                The format is the embedded server's own; Consul's archives (`consul snapshot`) restore only into Consul.
                """,
            subcommands: [Save.self, Restore.self])

        struct Save: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Write the store to FILE.")
            @OptionGroup var consul: ConsulOptions
            @Argument(help: "Where to write the snapshot.") var file: String

            func run() async throws {
                let response = try await consul.client().send("GET", "/v1/snapshot", timeout: .seconds(60))
                guard response.status == 200 else { throw ValidationError("the server refused: \(response.status) \(response.text)") }
                // The store may hold secrets (a replication password in a config key): owner only, from
                // the first byte written.
                do { try AtomicFile.write(Data(response.body), to: file, mode: 0o600) } catch { throw ValidationError("cannot write \(file): \(error)") }
                print("Saved snapshot to \(file) (index \(response.header("x-consul-index") ?? "?"), \(response.body.count) bytes)")
            }
        }

        struct Restore: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Replace the store with FILE's snapshot.")
            @OptionGroup var consul: ConsulOptions
            @Argument(help: "A snapshot `baton consul snapshot save` wrote.") var file: String

            func run() async throws {
                guard let body = FileManager.default.contents(atPath: file) else { throw ValidationError("cannot read \(file)") }
                let response = try await consul.client().send("PUT", "/v1/snapshot", body: Array(body), timeout: .seconds(60))
                guard response.status == 200 else { throw ValidationError("the server refused the snapshot: \(response.status) \(response.text)") }
                print("Restored snapshot from \(file)")
            }
        }
    }

    struct Fault: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make an embedded server started with --fault-control misbehave as a real Consul does (drills, tests).",
            discussion: """
                election --for D        every call answers 500 "No cluster leader" (stale reads still served) for D
                hang --for D            calls are held for D, then served
                slow --delay L --for D  every answer comes L late, for D
                agent-restart --node N  the sessions of Consul node N are invalidated (--name PREFIX: only those)
                clear                   every fault ends now
                show                    the faults in force
                """
        )

        enum Kind: String, ExpressibleByArgument, CaseIterable {
            case election, hang, slow, show, clear
            case agentRestart = "agent-restart"
        }

        @Option(help: "The server's fault-control address (its --fault-control).") var control = "127.0.0.1:8501"
        @Argument(help: "election, hang, slow, agent-restart, clear or show.") var kind: Kind
        @Option(name: .customLong("for"), help: "How long the fault lasts (a Go duration).") var length: String?
        @Option(help: "How late every answer comes (slow).") var delay: String?
        @Option(help: "The Consul node whose agent restarts (agent-restart).") var node: String?
        @Option(help: "Only the sessions whose name starts with this (agent-restart).") var name: String?

        func validate() throws {
            _ = try Serve.hostPort(control, flag: "--control")
            for (flag, value) in [("--for", length), ("--delay", delay)] {
                if let value {
                    do { _ = try GoDuration(parsing: value) } catch { throw ValidationError("\(flag) \(value): \(error.message)") }
                }
            }
            switch kind {
            case .election, .hang:
                guard length != nil else { throw ValidationError("\(kind.rawValue) needs --for D (e.g. --for 5s)") }
            case .slow:
                guard length != nil, delay != nil else { throw ValidationError("slow needs --delay L and --for D (e.g. --delay 2s --for 10s)") }
            case .agentRestart:
                guard node != nil else { throw ValidationError("agent-restart needs --node N (the Consul node whose agent restarts)") }
            case .show, .clear: break
            }
        }

        func run() async throws {
            var query: [String: String] = [:]
            query["for"] = length
            query["delay"] = delay
            query["node"] = node
            query["name"] = name
            do {
                print(try await FaultControlClient(address: control).send(kind == .show ? nil : kind.rawValue, query))
            } catch {
                FileHandle.standardError.write(Data("Error! \(error.message)\n".utf8))
                throw ExitCode(1)
            }
        }
    }
}
