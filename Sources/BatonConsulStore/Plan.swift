import ConsulAPI

/// An answer to an API request that Consul gives as an error status with a plain-text body.
package struct APIError: Error, Sendable {
    package var status: Int
    package var message: String
    package init(_ status: Int, _ message: String) {
        self.status = status
        self.message = message
    }
}

/// A write planned against the current state: the changes to make durable, then apply, and the answer.
package struct Plan<Result: Sendable>: Sendable {
    package var changes: [Change]
    package var result: Result
    package init(_ changes: [Change], _ result: Result) {
        self.changes = changes
        self.result = result
    }

    /// An answer that changes nothing.
    package init(_ result: Result) {
        self.init([], result)
    }
}
