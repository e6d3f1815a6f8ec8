import ConsulAPI

/// Follows one Consul read with blocking queries and yields each new result.
///
/// It applies Consul's index rules (``BlockingIndex``), yields only when the index moved, waits at least
/// `minimumInterval` between queries so that a key that changes constantly is not a busy loop, and backs
/// off exponentially (up to `maximumBackoff`) while Consul fails, yielding the error each time so that
/// the caller can log it and keep its last good value.
public struct ConsulWatch<Value: Sendable>: AsyncSequence, Sendable {
    public typealias Element = Result<QueryResult<Value>, ConsulError>

    let query: @Sendable (QueryOptions) async throws -> QueryResult<Value>
    let wait: Duration
    let consistency: Consistency
    let minimumInterval: Duration
    let maximumBackoff: Duration

    public init(
        wait: Duration = .seconds(60), consistency: Consistency = .default, minimumInterval: Duration = .milliseconds(10),
        maximumBackoff: Duration = .seconds(5), query: @escaping @Sendable (QueryOptions) async throws -> QueryResult<Value>
    ) {
        self.query = query
        self.wait = wait
        self.consistency = consistency
        self.minimumInterval = minimumInterval
        self.maximumBackoff = maximumBackoff
    }

    public func makeAsyncIterator() -> Iterator { Iterator(watch: self) }

    public struct Iterator: AsyncIteratorProtocol {
        let watch: ConsulWatch
        var index: UInt64 = 0
        var backoff: Duration = .zero
        var lastQuery: ContinuousClock.Instant? = nil

        public mutating func next() async -> Element? {
            while !Task.isCancelled {
                if backoff > .zero {
                    try? await Task.sleep(for: backoff)
                } else if let last = lastQuery {
                    let elapsed = ContinuousClock.now - last
                    if elapsed < watch.minimumInterval { try? await Task.sleep(for: watch.minimumInterval - elapsed) }
                }
                if Task.isCancelled { return nil }
                lastQuery = .now
                let sent = index
                do {
                    let result = try await watch.query(QueryOptions(index: sent, wait: watch.wait, consistency: watch.consistency))
                    backoff = .zero
                    index = BlockingIndex.next(sent: sent, returned: result.index)
                    if sent == 0 || result.index != sent { return .success(result) }
                } catch is CancellationError {
                    return nil
                } catch {
                    backoff = backoff == .zero ? .milliseconds(100) : Swift.min(backoff * 2, watch.maximumBackoff)
                    index = 0
                    let consulError = (error as? ConsulError) ?? ConsulError(.server, "\(error)")
                    return .failure(consulError)
                }
            }
            return nil
        }
    }
}
