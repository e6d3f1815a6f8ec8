import BatonCore
import BatonFence
import BatonTestSupport
import Foundation
import Testing

@Suite("baton check")
struct CheckStateTests {
    let second: UInt64 = 1_000_000_000

    @Test func passesOnlyWhileTheLeaseHoldsAndTheMonitorWrites() {
        let leading = CheckState(leading: true, deadline: 3 * second, written: 0, loopWait: second).text
        #expect(CheckState.verdict(leading, now: 2 * second, boot: nil) == .primary)
        #expect(CheckState.verdict(leading, now: 3 * second, boot: nil) != .primary, "the lease ran out: the watchdog fences now")
        let longLease = CheckState(leading: true, deadline: 60 * second, written: 0, loopWait: second).text
        #expect(CheckState.verdict(longLease, now: 4 * second, boot: nil) != .primary, "a dead monitor's state is stale")
        #expect(CheckState.verdict(CheckState(leading: false, deadline: 9 * second, written: 0, loopWait: second).text, now: 1, boot: nil) != .primary)
        #expect(CheckState.verdict(nil, now: 1, boot: nil) != .primary)
        for bad in ["", "primary", "primary x y z", "primary 1 2", "leader 1 2 3", "primary 1 2 3 4"] {
            #expect(CheckState.verdict(bad, now: 1, boot: nil) != .primary, "\(bad)")
        }
    }

    @Test("beside the tracked file: every live monitor passes; one whose file says it leads only with a live lease")
    func besideTheTrackFile() {
        let replica = CheckState(leading: false, deadline: 0, written: 0, loopWait: second).text
        let leading = CheckState(leading: true, deadline: 3 * second, written: 0, loopWait: second).text
        #expect(CheckState.besideTrackFile(replica, trackFiles: ["1\n"], now: second, boot: nil) == nil, "a replica's monitor is alive: the file keeps it FAULT")
        #expect(CheckState.besideTrackFile(replica, trackFiles: [nil], now: second, boot: nil) == nil)
        #expect(CheckState.besideTrackFile(leading, trackFiles: ["0\n"], now: 2 * second, boot: nil) == nil)
        #expect(CheckState.besideTrackFile(leading, trackFiles: ["0\n"], now: 3 * second, boot: nil) != nil, "the file still says leading, the lease ran out")
        #expect(CheckState.besideTrackFile(replica, trackFiles: ["0"], now: second, boot: nil) != nil, "the file says leading, the state does not")
        #expect(CheckState.besideTrackFile(replica, trackFiles: ["1"], now: 4 * second, boot: nil) != nil, "a dead monitor fails either way")
        #expect(CheckState.besideTrackFile(nil, trackFiles: ["1"], now: 1, boot: nil) != nil)
        #expect(CheckState.besideTrackFile("primary 1 2", trackFiles: ["1"], now: 1, boot: nil) != nil)
        // The file keepalived.conf tracks now, beside the one an earlier keepalived.conf tracks: either
        // saying 0 asks for the full verdict; a vacant node (-253) passes while its monitor is alive.
        #expect(CheckState.besideTrackFile(replica, trackFiles: ["-253\n", "1\n"], now: second, boot: nil) == nil, "vacant, the monitor alive")
        #expect(CheckState.besideTrackFile(replica, trackFiles: ["-253\n", "1\n"], now: 4 * second, boot: nil) != nil, "vacant, the monitor dead")
        #expect(CheckState.besideTrackFile(replica, trackFiles: ["-254\n", "0\n"], now: second, boot: nil) != nil, "an earlier file says leading")
        #expect(CheckState.besideTrackFile(replica, trackFiles: ["0\n", nil], now: second, boot: nil) != nil, "the new file says leading")
        #expect(CheckState.besideTrackFile(leading, trackFiles: ["0\n", "0\n"], now: 2 * second, boot: nil) == nil)
    }

    @Test("what keepalived is told: leading → full priority, vacant → priority 1, anything else → FAULT; an earlier keepalived.conf's file knows only leading or not")
    func standing() {
        #expect(VRRPStanding(leadingWritable: true, vacant: false) == .leading)
        #expect(VRRPStanding(leadingWritable: true, vacant: true) == .leading, "a writable primary here: nothing else counts")
        #expect(VRRPStanding(leadingWritable: false, vacant: true) == .vacant)
        #expect(VRRPStanding(leadingWritable: false, vacant: false) == .barred)
        #expect([VRRPStanding.leading, .vacant, .barred].map(\.trackFileText) == ["0\n", "-253\n", "-254\n"])
        #expect([VRRPStanding.leading, .vacant, .barred].map(\.legacyTrackFileText) == ["0\n", "1\n", "1\n"])
        // vip_policy priority: every node the same, leader or not, its PostgreSQL up or not — keepalived's
        // own priorities decide, one lower each, and never the 0 the check holds to a leader's verdict.
        for (writable, vacant) in [(true, false), (false, true), (false, false)] {
            #expect(VRRPStanding(policy: .priority, leadingWritable: writable, vacant: vacant) == .routing)
            #expect(VRRPStanding(policy: .primary, leadingWritable: writable, vacant: vacant) == VRRPStanding(leadingWritable: writable, vacant: vacant))
        }
        #expect(VRRPStanding.routing.trackFileText == "-1\n" && !VRRPStanding.saysLeading(VRRPStanding.routing.trackFileText))
        // keepalived: weight 1 adds the value to the priority (clamped to 1…254); below -253 is FAULT.
        func effective(_ standing: VRRPStanding, base: Int) -> Int? {
            let value = Int(standing.trackFileText.dropLast())!
            return value < -253 ? nil : min(254, max(1, base + value))
        }
        for base in stride(from: 10, through: 200, by: 10) {
            #expect(effective(.leading, base: base) == base)
            #expect(effective(.vacant, base: base) == 1, "below every leader's priority")
            #expect(effective(.barred, base: base) == nil)
            #expect(effective(.routing, base: base) == base - 1, "every node one lower: their order kept")
        }
        #expect(VRRPStanding.saysLeading(" 0\n") && !VRRPStanding.saysLeading("-253\n") && !VRRPStanding.saysLeading(nil) && !VRRPStanding.saysLeading(""))
    }

    @Test("a state file left by the machine's previous boot never passes: its clock readings are ahead of this boot's")
    func aPreviousBootsStateIsStale() {
        // The leader's machine crashed at 5 days of uptime and started again: keepalived runs `baton check`
        // 10 s into the new boot, before the monitor wrote anything.
        let day = 86_400 * second
        let leftOver = CheckState(leading: true, deadline: 5 * day + 3 * second, written: 5 * day, loopWait: second).text
        #expect(CheckState.verdict(leftOver, now: 10 * second, boot: nil) != .primary)
        #expect(CheckState.besideTrackFile(leftOver, trackFiles: ["0\n"], now: 10 * second, boot: nil) != nil)
        #expect(CheckState(text: leftOver)?.staleness(now: 10 * second, boot: nil)?.contains("previous boot") == true)
        // The previous boot's last write at about this boot's uptime: only its boot ID tells.
        let sameUptime = CheckState(leading: true, deadline: 13 * second, written: 10 * second, loopWait: second, boot: "boot-a").text
        #expect(CheckState.verdict(sameUptime, now: 11 * second, boot: "boot-a") == .primary)
        #expect(CheckState.verdict(sameUptime, now: 11 * second, boot: "boot-b") != .primary)
        #expect(CheckState.besideTrackFile(sameUptime, trackFiles: ["0\n"], now: 11 * second, boot: "boot-b") != nil)
        #expect(CheckState.besideTrackFile(sameUptime, trackFiles: ["1\n"], now: 11 * second, boot: "boot-b") != nil, "a monitor of another boot is not alive")
        // A file written without one (before boot IDs) is judged by the clock alone.
        let withoutBoot = CheckState(leading: true, deadline: 13 * second, written: 10 * second, loopWait: second).text
        #expect(withoutBoot.split(separator: " ").count == 4)
        #expect(CheckState.verdict(withoutBoot, now: 11 * second, boot: "boot-b") == .primary)
    }

    @Test func theTextRoundTrips() {
        let state = CheckState(leading: true, deadline: 42, written: 7, loopWait: 1000)
        #expect(CheckState(text: state.text) == state)
        let booted = CheckState(leading: true, deadline: 42, written: 7, loopWait: 1000, boot: "6e1c0d3a-3b55-4f5e-9d0c-6a3a3d2f1b7e")
        #expect(CheckState(text: booted.text) == booted)
        #expect(CheckState(leading: false, deadline: 42, written: 7, loopWait: 1000).deadline == 0)
    }

    @Test("the command: a leader's file of this boot passes; one left by another boot, or stamped later than now, fails")
    func theCommandJudgesLeftOverFiles() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("baton-check-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }  // ignored: a leftover temporary directory harms nothing
        try "0\n".write(toFile: KeepalivedSettings.trackFilePath(stateDirectory: directory), atomically: true, encoding: .utf8)
        let boot = try #require(MonotonicClock.bootID())
        func check(_ state: CheckState, beside: Bool) async throws -> (status: Int32, output: String) {
            try state.text.write(toFile: CheckState.path(stateDirectory: directory), atomically: true, encoding: .utf8)
            let flags = (beside ? ["--beside-track-file"] : []) + ["--verbose", "--state-dir", directory]
            return try await runCommand(BatonProcess.executable, ["check"] + flags)
        }
        for beside in [false, true] {
            // Stamped afresh for each pass: under load, three runs of the command can take longer than
            // the three loops after which a state counts as stale.
            let now = MonotonicClock.nanoseconds()
            let leading = CheckState(leading: true, deadline: now + 60 * second, written: now, loopWait: second, boot: boot)
            #expect(try await check(leading, beside: beside).status == 0)
            var otherBoot = leading
            otherBoot.boot = "00000000-0000-4000-8000-000000000000"
            let refused = try await check(otherBoot, beside: beside)
            #expect(refused.status == 1 && refused.output.contains("previous boot"), "\(refused)")
            // Written at 5 days of uptime by the previous boot (a file without a boot ID).
            let stampedLater = CheckState(leading: true, deadline: now + 5 * 86_400 * second, written: now + 5 * 86_000 * second, loopWait: second)
            let late = try await check(stampedLater, beside: beside)
            #expect(late.status == 1 && late.output.contains("previous boot"), "\(late)")
        }
    }
}
