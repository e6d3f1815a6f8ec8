import BatonConsul
import ConsulAPI

/// The loop both daemons run: `body` now, then again each time something wakes it or `interval`
/// passes, until the task is cancelled.
func runLoop(wakes: AsyncStream<Void>, wake: AsyncStream<Void>.Continuation, interval: () -> Duration, body: () async -> Void) async {
    var iterator = wakes.makeAsyncIterator()
    while !Task.isCancelled {
        await body()
        let pause = interval()
        let tick = Task {
            do {
                try await Task.sleep(for: pause)
                wake.yield()
            } catch {}
        }
        _ = await iterator.next()
        tick.cancel()
    }
}

/// Wakes `wake` each time the leader key gets a new holder or session — not on the leader's
/// heartbeat, which rewrites the key every loop. Runs until cancelled.
func watchLeaderHolder(client: ConsulClient, key: String, wake: AsyncStream<Void>.Continuation) async {
    var last: [UInt8]? = nil
    for await result in ConsulWatch(wait: .seconds(30), query: { try await client.get(key, $0) }) {
        let pair = try? result.get().value
        let identity = (pair?.value ?? []) + Array((pair?.session ?? "-").utf8)
        if identity != last { wake.yield() }
        last = identity
    }
}
