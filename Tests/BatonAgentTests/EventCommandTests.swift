import BatonAgent
import BatonCore
import Foundation
import Logging
import Testing

@Suite("event command")
struct EventCommandTests {
    let directory = NSTemporaryDirectory() + "baton-event-" + UUID().uuidString.prefix(8)

    func script(_ body: String) throws -> String {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let path = directory + "/on-event"
        try ("#!/bin/sh\n" + body + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, 0o755)
        return path
    }

    @Test func runsEachEventInOrderWithSeparateArgumentsAndNeverThroughAShell() async throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let out = directory + "/out"
        let program = try script(#"printf '%s|%s|%s|%s|%s\n' "$#" "$1" "$2" "$4" "$BATON_EVENT_KIND" >> "\#(out)""#)
        let command = EventCommand(program: program, cluster: try ClusterName("main"), logger: Logger(label: "test"))
        async let ran: Void = command.run()
        let node = try NodeName("pg2")
        command.submit(ClusterEvent(time: "2026-11-22T05:00:00Z", node: node, kind: "promote", detail: "promoted to primary"))
        command.submit(ClusterEvent(time: "2026-11-22T05:00:01Z", node: node, kind: "follow", detail: "$(touch \(directory)/pwned); x\nsecond line"))
        command.finish()
        await ran
        let lines = try String(contentsOfFile: out, encoding: .utf8).split(separator: "\n")
        #expect(lines == ["4|promote|pg2|promoted to primary|promote", "4|follow|pg2|$(touch \(directory)/pwned); x second line|follow"])
        #expect(!FileManager.default.fileExists(atPath: directory + "/pwned"), "no shell ever reads the detail")
    }

    @Test func aHangingCommandIsKilledAndNeverHoldsUpTheCaller() async throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let out = directory + "/out"
        let program = try script("echo \"$1\" >> \(out); [ \"$1\" = hang ] && exec sleep 60; exit 0")
        let command = EventCommand(program: program, cluster: try ClusterName("main"), logger: Logger(label: "test"), timeout: .milliseconds(500))
        async let ran: Void = command.run()
        let node = try NodeName("pg1")
        let started = ContinuousClock.now
        command.submit(ClusterEvent(time: "t", node: node, kind: "hang", detail: ""))
        command.submit(ClusterEvent(time: "t", node: node, kind: "after", detail: ""))
        #expect(ContinuousClock.now - started < .milliseconds(100), "submit returns at once")
        command.finish()
        await ran
        #expect(ContinuousClock.now - started < .seconds(30), "the hanging command was killed, not waited for")
        #expect(try String(contentsOfFile: out, encoding: .utf8) == "hang\nafter\n", "the next event ran after the kill")
    }
}
