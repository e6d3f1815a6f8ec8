/// KV keys in byte order (as Consul orders and matches them), so that a listing under a prefix reads only
/// the keys under it instead of every key the server holds. Keys are told apart by their bytes.
package struct SortedKeys: Sendable {
    package init() {}

    package private(set) var keys: [String] = []

    /// Adds `key` unless present.
    package mutating func insert(_ key: String) {
        let i = lowerBound(key)
        if i == keys.count || !keys[i].utf8.elementsEqual(key.utf8) { keys.insert(key, at: i) }
    }

    package mutating func remove(_ key: String) {
        let i = lowerBound(key)
        if i < keys.count, keys[i].utf8.elementsEqual(key.utf8) { keys.remove(at: i) }
    }

    /// The keys that start with `prefix` (bytewise), in order.
    package func withPrefix(_ prefix: String) -> ArraySlice<String> {
        let start = lowerBound(prefix)
        var end = start
        while end < keys.count, keys[end].utf8.starts(with: prefix.utf8) { end += 1 }
        return keys[start..<end]
    }

    /// The first position whose key is not bytewise before `key`.
    private func lowerBound(_ key: String) -> Int {
        var low = 0, high = keys.count
        while low < high {
            let middle = (low + high) / 2
            if keys[middle].utf8.lexicographicallyPrecedes(key.utf8) { low = middle + 1 } else { high = middle }
        }
        return low
    }
}
