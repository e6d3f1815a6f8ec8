/// Why a Consul call failed, in words an operator can act on.
///
/// The `code` says what kind of failure it was; `message` says what happened and, where it helps,
/// what to do. A token never appears in either.
public struct ConsulError: Error, Sendable, CustomStringConvertible, Equatable {
    /// The kind of failure; new kinds can be added without breaking anyone's `switch`.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String { case unreachable, permissionDenied, casConflict, sessionNotFound, badRequest, notFound, server, decoding, invalidArgument }
        private let base: Base

        /// No Consul address answered (refused, reset, timed out, TLS failure).
        public static let unreachable = Code(base: .unreachable)
        /// Consul refused the token (HTTP 403): an ACL denies the call.
        public static let permissionDenied = Code(base: .permissionDenied)
        /// A check-and-set write lost: the key changed since it was read.
        public static let casConflict = Code(base: .casConflict)
        /// The session does not exist (expired, destroyed, or never created).
        public static let sessionNotFound = Code(base: .sessionNotFound)
        /// Consul rejected the request as malformed (HTTP 400 or 413).
        public static let badRequest = Code(base: .badRequest)
        /// The addressed object does not exist (HTTP 404).
        public static let notFound = Code(base: .notFound)
        /// Consul failed the request (HTTP 5xx or 429); usually worth retrying.
        public static let server = Code(base: .server)
        /// Consul answered with something that is not what its API documents.
        public static let decoding = Code(base: .decoding)
        /// The caller passed a value that must not be sent (an invalid key, say); nothing was sent.
        public static let invalidArgument = Code(base: .invalidArgument)

        public var description: String { base.rawValue }
    }

    public var code: Code
    /// The HTTP status, when Consul answered.
    public var status: Int?
    public var message: String

    public init(_ code: Code, status: Int? = nil, _ message: String) {
        self.code = code
        self.status = status
        self.message = message
    }

    public var description: String { message }

    /// Whether the same call may succeed if simply tried again later.
    public var isRetryable: Bool { code == .unreachable || code == .server }
}
