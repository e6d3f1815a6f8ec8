// consul-bench: figures for Baton's embedded Consul-compatible server.
//
// Starts `baton consul serve` (the binary built next to this one) on a free port with a temporary data
// directory, measures, prints a table and a JSON line, and removes everything it made.
//
//   swift build -c release && .build/release/consul-bench [--writes N] [--watchers N] [--keys N]
import BatonConsul
import ConsulAPI
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

struct Options {
    var writes = 4000
    var reads = 8000
    var concurrency = 8
    var watchers = 200
    var keys = 10_000
    var rounds = 5

    init(_ arguments: [String]) {
        var i = 1
        while i < arguments.count {
            let value = i + 1 < arguments.count ? Int(arguments[i + 1]) : nil
            switch (arguments[i], value) {
            case ("--writes", let v?): writes = v
            case ("--reads", let v?): reads = v
            case ("--concurrency", let v?): concurrency = v
            case ("--watchers", let v?): watchers = v
            case ("--keys", let v?): keys = v
            case ("--rounds", let v?): rounds = v
            default:
                FileHandle.standardError.write(Data("usage: consul-bench [--writes N] [--reads N] [--concurrency N] [--watchers N] [--keys N] [--rounds N]\n".utf8))
                exit(2)
            }
            i += 2
        }
    }
}

func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }

func median(_ values: [Double]) -> Double {
    let s = values.sorted()
    return s.isEmpty ? 0 : s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

func freePort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
    _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
    return Int(UInt16(bigEndian: address.sin_port))
}

func rssMB(_ pid: Int32) -> Double {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
        let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
        let kb = Double(line.split(separator: " ", omittingEmptySubsequences: true)[1])
    else { return 0 }
    return kb / 1024
}

final class Server {
    let process = Process()
    init(binary: String, port: Int, directory: String) throws {
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["consul", "serve", "--listen", "127.0.0.1:\(port)", "--data-dir", directory]
        process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
    }
    func stop() {
        guard process.isRunning else { return }
        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
    }
}

func waitReady(_ client: ConsulClient) async throws -> Duration {
    let start = ContinuousClock.now
    while ContinuousClock.now - start < .seconds(60) {
        if (try? await client.leader()) != nil { return ContinuousClock.now - start }
        try await Task.sleep(for: .milliseconds(5))
    }
    throw ConsulError(.unreachable, "the server did not start within 60 s")
}

/// Runs `total` operations spread over `workers` tasks; returns operations per second.
func throughput(total: Int, workers: Int, _ op: @escaping @Sendable (Int) async throws -> Void) async throws -> Double {
    let start = ContinuousClock.now
    try await withThrowingTaskGroup(of: Void.self) { group in
        for w in 0..<workers {
            group.addTask {
                var i = w
                while i < total {
                    try await op(i)
                    i += workers
                }
            }
        }
        try await group.waitForAll()
    }
    return Double(total) / seconds(ContinuousClock.now - start)
}

let options = Options(CommandLine.arguments)
let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("baton").path
guard FileManager.default.isExecutableFile(atPath: binary) else {
    FileHandle.standardError.write(Data("consul-bench: \(binary) not found; build the package first (swift build -c release)\n".utf8))
    exit(1)
}
let directory = NSTemporaryDirectory() + "consul-bench-\(UUID().uuidString.prefix(8))"
let port = freePort()
var server = try Server(binary: binary, port: port, directory: directory)
defer {
    server.stop()
    try? FileManager.default.removeItem(atPath: directory)
}
let client = ConsulClient(ConsulConfiguration(addresses: [try ConsulAddress(parsing: "127.0.0.1:\(port)")], requestTimeout: .seconds(30)))
_ = try await waitReady(client)
let value = Array(repeating: UInt8(ascii: "x"), count: 100)

let writesPerSecond = try await throughput(total: options.writes, workers: options.concurrency) { i in
    try await client.put("bench/w/\(i % 500)", value)
}
let readsPerSecond = try await throughput(total: options.reads, workers: options.concurrency) { i in
    _ = try await client.get("bench/w/\(i % 500)")
}

// One write wakes N blocked watchers: time from the write to the last watcher's answer.
var wakeAll: [Double] = []
var wakeMedian: [Double] = []
for round in 0..<options.rounds {
    let key = "bench/watch/\(round)"
    try await client.put(key, "0")
    let index = try await client.get(key).value!.modifyIndex
    let started = ContinuousClock.now
    let watchers = Task {
        try await withThrowingTaskGroup(of: ContinuousClock.Instant.self) { group in
            for _ in 0..<options.watchers {
                group.addTask {
                    _ = try await client.get(key, QueryOptions(index: index, wait: .seconds(60)))
                    return ContinuousClock.now
                }
            }
            var done: [ContinuousClock.Instant] = []
            for try await t in group { done.append(t) }
            return done
        }
    }
    try await Task.sleep(for: .milliseconds(500))  // let every watcher block
    let written = ContinuousClock.now
    try await client.put(key, "1")
    let done = try await watchers.value
    _ = started
    let delays = done.map { seconds($0 - written) * 1000 }
    wakeAll.append(delays.max() ?? 0)
    wakeMedian.append(median(delays))
}

// Memory with N keys, then the time to restart with them.
let baseline = rssMB(server.process.processIdentifier)
_ = try await throughput(total: options.keys, workers: options.concurrency) { i in
    try await client.put("bench/keys/\(i)", value)
}
let loaded = rssMB(server.process.processIdentifier)
var restarts: [Double] = []
for _ in 0..<options.rounds {
    server.stop()
    server = try Server(binary: binary, port: port, directory: directory)
    let ready = try await waitReady(client)
    let count = try await client.keys("bench/keys/").value.count
    guard count == options.keys else {
        FileHandle.standardError.write(Data("consul-bench: after a restart \(count) of \(options.keys) keys came back\n".utf8))
        exit(1)
    }
    restarts.append(seconds(ready) * 1000)
}
let afterRestart = rssMB(server.process.processIdentifier)

let rows: [(String, String)] = [
    ("KV writes/s (\(options.concurrency) writers, fsync each)", String(format: "%.0f", writesPerSecond)),
    ("KV reads/s (\(options.concurrency) readers)", String(format: "%.0f", readsPerSecond)),
    ("one write wakes \(options.watchers) watchers: last answer (median of \(options.rounds))", String(format: "%.1f ms", median(wakeAll))),
    ("  median watcher", String(format: "%.1f ms", median(wakeMedian))),
    ("server RSS, empty", String(format: "%.1f MB", baseline)),
    ("server RSS holding \(options.keys) keys of 100 B", String(format: "%.1f MB", loaded)),
    ("server RSS after restart with them", String(format: "%.1f MB", afterRestart)),
    ("restart with \(options.keys) keys until it answers (median of \(options.rounds))", String(format: "%.0f ms", median(restarts))),
]
print("consul-bench — baton consul serve, \(ProcessInfo.processInfo.activeProcessorCount) cores")
for (name, figure) in rows { print(name.padding(toLength: 72, withPad: " ", startingAt: 0) + figure) }
print(
    #"{"writes_per_s":\#(Int(writesPerSecond)),"reads_per_s":\#(Int(readsPerSecond)),"wake_watchers":\#(options.watchers),"wake_all_ms":\#(String(format: "%.2f", median(wakeAll))),"rss_empty_mb":\#(String(format: "%.1f", baseline)),"rss_keys_mb":\#(String(format: "%.1f", loaded)),"keys":\#(options.keys),"restart_ms":\#(String(format: "%.0f", median(restarts)))}"#
)
