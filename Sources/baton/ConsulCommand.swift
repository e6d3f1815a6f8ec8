import ArgumentParser
import BatonAgent
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
        subcommands: [Serve.self, KV.self]
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

        @Option(help: "The address reported as the cluster leader (status/leader).")
        var advertise = "127.0.0.1"

        func validate() throws {
            _ = try listenAddress()
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

        func listenAddress() throws -> (String, Int) {
            guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]), (0...65535).contains(port) else {
                throw ValidationError("--listen \(listen): expected HOST:PORT with a port from 0 to 65535")
            }
            let host = String(listen[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
            guard !host.isEmpty else { throw ValidationError("--listen \(listen): the host is missing") }
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
                server = try await ConsulServer(host: host, port: port, dataDirectory: dataDir, settings: settings, logger: logger)
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
}
