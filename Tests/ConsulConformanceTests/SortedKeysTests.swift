import BatonConsulStore
import Testing

struct SortedKeysTests {
    @Test("a prefix reads exactly the keys a scan of every key finds, in byte order, through inserts and removals")
    func matchesAScan() {
        var generator = SystemRandomNumberGenerator()
        let alphabet = ["a", "b", "/", "é", "e", "\u{301}", "z", "0"]
        var keys = SortedKeys()
        // Told apart by bytes: "é" and "e\u{301}" are two keys, as in Consul.
        var all = Set<[UInt8]>()
        for step in 0..<3_000 {
            let key = (0..<Int.random(in: 0...5, using: &generator)).map { _ in alphabet.randomElement(using: &generator)! }.joined()
            if step % 3 == 2 { keys.remove(key); all.remove(Array(key.utf8)) } else { keys.insert(key); all.insert(Array(key.utf8)) }
        }
        let ordered = all.sorted { $0.lexicographicallyPrecedes($1) }
        #expect(keys.keys.map { Array($0.utf8) } == ordered)
        for prefix in ["", "a", "ab", "e", "é", "/", "a/b", "zzzzzz", "\u{301}"] {
            #expect(keys.withPrefix(prefix).map { Array($0.utf8) } == ordered.filter { $0.starts(with: prefix.utf8) }, "prefix \(prefix)")
        }
    }
}
