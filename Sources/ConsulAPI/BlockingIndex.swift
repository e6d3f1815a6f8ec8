/// Consul's rules for the index a blocking-query loop sends next (Consul's "Blocking Queries" docs,
/// "Implementation Details").
public enum BlockingIndex {
    /// The index to block on after a query that was sent with `sent` returned `returned`.
    ///
    /// - An index that went backwards (a snapshot restore, a server restarted with new state, a reaped
    ///   tombstone) resets to 0: read afresh instead of waiting on a value that may never come back.
    /// - An index of 0 (a buggy server) is treated as 1, so the next query still blocks.
    public static func next(sent: UInt64, returned: UInt64) -> UInt64 {
        if returned < sent { return 0 }
        if returned == 0 { return 1 }
        return returned
    }
}
