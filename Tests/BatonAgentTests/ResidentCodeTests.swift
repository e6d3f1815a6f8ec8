import BatonAgent
import Foundation
import Testing

struct ResidentCodeTests {
    /// This process's resident file-backed memory (kB).
    static func residentFileKB() throws -> Int {
        let status = try String(contentsOfFile: "/proc/self/status", encoding: .utf8)
        let line = try #require(status.split(separator: "\n").first { $0.hasPrefix("RssFile:") })
        return try #require(Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]))
    }

    @Test("trimming drops this process's resident code pages, and the process runs on")
    func trimDropsResidentCode() throws {
        let before = try Self.residentFileKB()
        let (mappings, dropped) = ResidentCodeTrimmer.trim()
        let after = try Self.residentFileKB()
        #expect(mappings > 0)
        #expect(dropped > 0)
        #expect(after < before, "resident file pages: \(before) kB before, \(after) kB after")
        // Code runs again from the page cache, a page at a time, as it is needed.
        #expect(String(decoding: Array("still runs".utf8), as: UTF8.self) == "still runs")
        #expect(try Self.residentFileKB() > 0)
    }
}
