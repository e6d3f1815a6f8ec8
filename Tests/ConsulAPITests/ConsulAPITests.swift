import ConsulAPI
import Testing

@Suite("Go durations")
struct GoDurationTests {
    @Test(arguments: [
        ("0", Int64(0)), ("0s", 0), ("15s", 15_000_000_000), ("15.0s", 15_000_000_000), ("9.87654s", 9_876_540_000),
        ("1m30s", 90_000_000_000), ("300000ms", 300_000_000_000), ("0.001s", 1_000_000), ("1h", 3_600_000_000_000),
        ("-1s", -1_000_000_000), ("+2ms", 2_000_000), ("1.5h", 5_400_000_000_000), ("20ns", 20), ("3us", 3_000),
        ("3µs", 3_000), (".5s", 500_000_000), ("15.000000s", 15_000_000_000), ("60000ms", 60_000_000_000),
    ])
    func parses(text: String, nanoseconds: Int64) throws {
        #expect(try GoDuration(parsing: text).nanoseconds == nanoseconds)
    }

    @Test(arguments: ["10", "abc", "", "1x", "s", ".s", "1.s.", "--1s", "9999999999h"])
    func rejects(text: String) {
        #expect(throws: GoDurationError.self) { try GoDuration(parsing: text) }
    }

    @Test func errorTextsAreGos() {
        #expect(throws: GoDurationError(message: #"time: invalid duration "abc""#)) { try GoDuration(parsing: "abc") }
        #expect(throws: GoDurationError(message: #"time: missing unit in duration "10""#)) { try GoDuration(parsing: "10") }
    }

    @Test(arguments: [
        (Int64(0), "0s"), (1_000_000, "1ms"), (1_500_000, "1.5ms"), (10_000_000_000, "10s"), (90_000_000_000, "1m30s"),
        (86_400_000_000_000, "24h0m0s"), (1_000, "1µs"), (100, "100ns"), (60_000_000_000, "1m0s"), (1_500_000_000, "1.5s"),
        (-2_000_000_000, "-2s"),
    ])
    func formatsLikeGo(nanoseconds: Int64, text: String) {
        #expect(GoDuration(nanoseconds: nanoseconds).description == text)
    }
}

@Suite("JSON")
struct JSONValueTests {
    @Test func keepsLargeIntegersExactly() throws {
        let json = try JSONValue.parse(#"{"Flags":3304740253564472344,"x":[1,2.5,-3e2]}"#)
        #expect(json.member("Flags")?.uint64Value == 3_304_740_253_564_472_344)
        #expect(json.serialized() == #"{"Flags":3304740253564472344,"x":[1,2.5,-3e2]}"#)
    }

    @Test func matchesMemberNamesWithoutCase() throws {
        let json = try JSONValue.parse(#"{"lockdelay":"1ms","TTL":"15s"}"#)
        #expect(json.member("LockDelay") == .string("1ms"))
        #expect(json.member("ttl") == .string("15s"))
        #expect(json.member("Name") == nil)
    }

    @Test func escapesAndUnescapes() throws {
        let text = "a\"b\\c\nd\u{01}é😀<>&"
        let round = try JSONValue.parse(JSONValue.string(text).serialized())
        #expect(round == .string(text))
        #expect(try JSONValue.parse(#""\ud83d\ude00""#) == .string("😀"))
    }

    @Test(arguments: [#"{"Name":"#, "{", "[1,]", "tru", #"{"a" 1}"#, "1 2", "", #""\x""#])
    func rejectsMalformedText(text: String) {
        #expect(throws: JSONParseError.self) { try JSONValue.parse(text) }
    }
}

@Suite("Wire helpers")
struct WireHelperTests {
    @Test(arguments: ["", "f", "fo", "foo", "foob", "fooba", "foobar"])
    func base64RoundTrips(text: String) {
        let bytes = Array(text.utf8)
        #expect(Base64.decode(Base64.encode(bytes)) == bytes)
    }

    @Test func base64MatchesConsul() {
        #expect(Base64.encode(Array("bar".utf8)) == "YmFy")
        #expect(Base64.decode("cG9zdGdyZXNxbDA=") == Array("postgresql0".utf8))
        #expect(Base64.decode("abc") == nil)
        #expect(Base64.decode("ab=c") == nil)
        #expect(Base64.decode("a!==") == nil)
    }

    @Test(arguments: [
        (UInt64(0), UInt64(10), UInt64(10)),  // first read
        (10, 12, 12),  // moved on
        (10, 10, 10),  // timed out or a no-op write: same index, loop
        (10, 5, 0),  // went backwards: reset and read afresh
        (10, 0, 0),  // 0 is lower than what we sent: reset
        (0, 0, 1),  // a buggy server's 0 becomes 1
    ])
    func blockingIndexRules(sent: UInt64, returned: UInt64, next: UInt64) {
        #expect(BlockingIndex.next(sent: sent, returned: returned) == next)
    }

    @Test func keyProblems() {
        #expect(KeyPath.problem(with: "service/baton/leader") == nil)
        #expect(KeyPath.problem(with: "folder/") == nil)
        #expect(KeyPath.problem(with: "") != nil)
        #expect(KeyPath.problem(with: "", allowEmpty: true) == nil)
        #expect(KeyPath.problem(with: "/abs") != nil)
        #expect(KeyPath.problem(with: "a/../b") != nil)
        #expect(KeyPath.problem(with: "a//b") != nil)
        #expect(KeyPath.problem(with: "a\nb") != nil)
    }

    @Test func escapesPathSegments() {
        #expect(KeyPath.escape("a b/c?d") == "a%20b/c%3Fd")
        #expect(KeyPath.escape("batman/pg0", keepSlash: false) == "batman%2Fpg0")
        #expect(KeyPath.unescape("batman%2Fpg0") == "batman/pg0")
        #expect(KeyPath.unescape("a+b", plusAsSpace: true) == "a b")
        #expect(KeyPath.unescape("bad%2") == nil)
    }

    @Test func kvPairRoundTripsThroughJSON() throws {
        let pair = KVPair(key: "k", value: [0, 255, 1], flags: UInt64.max, session: "s", lockIndex: 2, createIndex: 3, modifyIndex: 4)
        #expect(try KVPair(json: pair.json) == pair)
        let unlocked = KVPair(key: "k", value: nil)
        #expect(try KVPair(json: unlocked.json) == unlocked)
        #expect(throws: ConsulDecodingError.self) { try KVPair(json: .object([("Key", .string("k")), ("Value", .string("!!"))])) }
    }
}
