@testable import BatonCore
import Testing

struct TimeTextTests {
    @Test("RFC 3339 in UTC with milliseconds, across leap days, centuries and before the epoch")
    func rfc3339() {
        #expect(TimeText.rfc3339(seconds: 0, nanoseconds: 0) == "1970-01-01T00:00:00.000Z")
        #expect(TimeText.rfc3339(seconds: 951_782_400, nanoseconds: 999_999_999) == "2000-02-29T00:00:00.999Z")
        #expect(TimeText.rfc3339(seconds: 4_107_542_400, nanoseconds: 1_000_000) == "2100-03-01T00:00:00.001Z")
        #expect(TimeText.rfc3339(seconds: 1_795_866_237, nanoseconds: 123_456_789) == "2026-11-28T11:43:57.123Z")
        #expect(TimeText.rfc3339(seconds: -1, nanoseconds: 0) == "1969-12-31T23:59:59.000Z")
    }

    @Test("every day from 1900 to 2200 follows the one before it")
    func consecutiveDays() {
        var previous = TimeText.civilDate(daysSinceEpoch: -25_567)
        #expect(previous == (1900, 1, 1))
        let monthLengths: [Int64] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
        for day in Int64(-25_566)...Int64(84_000) {
            let date = TimeText.civilDate(daysSinceEpoch: day)
            let (y, m, d) = previous
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
            let length = m == 2 && leap ? 29 : monthLengths[Int(m - 1)]
            let expected = d < length ? (y, m, d + 1) : (m < 12 ? (y, m + 1, 1) : (y + 1, 1, 1))
            #expect(date == expected, "day \(day)")
            if date != expected { return }
            previous = date
        }
    }

    @Test("fixed decimals, rounded half away from zero")
    func fixed() {
        #expect(TimeText.fixed(12.3456, places: 3) == "12.346")
        #expect(TimeText.fixed(1_795_866_237.5, places: 3) == "1795866237.500")
        #expect(TimeText.fixed(0.0005, places: 3) == "0.001")
        #expect(TimeText.fixed(-2.25, places: 1) == "-2.3")
        #expect(TimeText.fixed(-0.0001, places: 3) == "0.000")
        #expect(TimeText.fixed(7, places: 0) == "7")
        #expect(TimeText.fixed(.nan, places: 3) == "0")
    }
}
