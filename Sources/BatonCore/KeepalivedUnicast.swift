import Foundation

/// Unicast VRRP in a node's keepalived.conf, for networks that drop multicast (most clouds): the
/// `unicast_src_ip` and `unicast_peer` lines of the `vrrp_instance`, between two marker lines that Baton
/// owns. Everything else in the file stays as it is, so bootstrap renders the file from its template
/// and the monitor only ever touches this block when nodes join or leave.
public enum KeepalivedUnicast {
    static let begin = "    # baton: unicast VRRP, kept by the monitor from the nodes registered in Consul (do not edit)"
    static let end = "    # baton: end of unicast VRRP"

    /// The addresses keepalived may use: IP addresses only (keepalived resolves no names here).
    static func addresses(source: HostAddress, peers: [HostAddress]) throws(ValidationProblem) -> (source: String, peers: [String]) {
        func ip(_ host: HostAddress, _ whose: String) throws(ValidationProblem) -> String {
            guard IPAddress.parse(host.value) != nil else {
                throw ValidationProblem("unicast VRRP needs IP addresses, and \(whose) address is \(Quote.show(host.value)); bootstrap that node with an IP --address")
            }
            return host.value
        }
        let own = try ip(source, "this node's")
        var others: [String] = []
        for peer in peers { others.append(try ip(peer, "a peer's")) }
        return (own, Array(Set(others.filter { $0 != own })).sorted())
    }

    /// `text` with its unicast block naming `source` and `peers` (sorted, without `source`), placed right
    /// after the `vrrp_instance … {` line; without a block when `source` is nil (multicast).
    public static func apply(to text: String, source: HostAddress?, peers: [HostAddress]) throws(ValidationProblem) -> String {
        var lines = text.components(separatedBy: "\n")
        if let from = lines.firstIndex(of: begin) {
            guard let to = lines[from...].firstIndex(of: end) else {
                throw ValidationProblem("keepalived.conf has Baton's unicast block without its end line; rerun bootstrap to rewrite the file")
            }
            lines.removeSubrange(from...to)
        }
        guard let source else { return lines.joined(separator: "\n") }
        let (own, others) = try addresses(source: source, peers: peers)
        guard let instance = lines.firstIndex(where: { isInstanceStart($0) }) else {
            throw ValidationProblem("keepalived.conf has no `vrrp_instance … {` line to add unicast peers to; rerun bootstrap to rewrite the file")
        }
        let block = [begin, "    unicast_src_ip \(own)", "    unicast_peer {"] + others.map { "        \($0)" } + ["    }", end]
        lines.insert(contentsOf: block, at: instance + 1)
        return lines.joined(separator: "\n")
    }

    /// The peers the file's unicast block names; nil when it has none (multicast).
    public static func peers(in text: String) -> [String]? {
        let lines = text.components(separatedBy: "\n")
        guard let from = lines.firstIndex(of: begin), let to = lines[from...].firstIndex(of: end) else { return nil }
        return lines[from...to].map { $0.trimmingCharacters(in: .whitespaces) }.filter { IPAddress.parse($0) != nil }
    }

    static func isInstanceStart(_ line: String) -> Bool {
        let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
        return words.first == "vrrp_instance" && words.last == "{"
    }
}
