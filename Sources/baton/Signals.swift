import Dispatch
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Waits for SIGTERM or SIGINT, the signals that ask a Baton daemon to stop gracefully.
enum Signals {
    static func waitForTermination() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let once = Once(continuation)
            for signalNumber in [SIGTERM, SIGINT] {
                signal(signalNumber, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
                source.setEventHandler { once.fire() }
                source.resume()
                Sources.keep(source)
            }
        }
    }

    /// Calls `handler` on every SIGHUP until the process ends.
    static func onHangup(_ handler: @escaping @Sendable () -> Void) {
        signal(SIGHUP, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
        source.setEventHandler(handler: handler)
        source.resume()
        Sources.keep(source)
    }

    private final class Once: @unchecked Sendable {
        // @unchecked: `continuation` is read and cleared under `lock`.
        private let lock = NSLock()
        private var continuation: CheckedContinuation<Void, Never>?
        init(_ c: CheckedContinuation<Void, Never>) { continuation = c }
        func fire() {
            lock.lock()
            let c = continuation
            continuation = nil
            lock.unlock()
            c?.resume()
        }
    }

    /// Signal sources must outlive the wait.
    private enum Sources {
        nonisolated(unsafe) static var kept: [any DispatchSourceSignal] = []
        static let lock = NSLock()
        static func keep(_ s: any DispatchSourceSignal) {
            lock.lock()
            kept.append(s)
            lock.unlock()
        }
    }
}
