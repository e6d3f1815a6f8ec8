/// `GET /` on every node API: the cluster at a glance in a browser — read-only server-rendered HTML with
/// a little CSS and no script, refreshing itself every two seconds: the leader, each node's row of
/// `baton status` (role, state, lag, lock, VRRP — who holds the virtual IP — and its pgbouncer's target),
/// the verdict of `baton explain`, warnings, and the last events. What an operator opens from any node
/// during an incident.
public enum StatusPage {
    /// - Parameters:
    ///   - answeredBy: the node whose monitor rendered it (its view of Consul).
    ///   - time: when, for the footer.
    public static func html(status: StatusView, explanation: FailoverExplanation, answeredBy: NodeName, time: String) -> String {
        var out = """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="2">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <title>Baton · \(escape(status.cluster.value)) · \(escape(status.leader.map { "leader \($0.value)" } ?? "no leader"))</title>
            <style>
            body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1d2330;background:#f7f8fa}
            h1{font-size:1.4em;margin:0 0 .3em} h2{font-size:1.1em;margin:1.4em 0 .4em}
            .banner{padding:.6em .9em;border-radius:6px;margin:.4em 0;font-weight:600}
            .ok{background:#dff3e4;color:#14532d} .bad{background:#fde2e1;color:#7f1d1d} .warn{background:#fef3c7;color:#78350f}
            table{border-collapse:collapse;background:#fff;box-shadow:0 1px 2px #0001} th,td{padding:.3em .55em;border-bottom:1px solid #e5e7eb;text-align:left;white-space:nowrap}
            th{background:#eef1f5;font-weight:600} tr.leader td{background:#eef8f0;font-weight:600}
            ul{margin:.2em 0;padding-left:1.3em} code{background:#eef1f5;padding:0 .3em;border-radius:3px}
            footer{margin-top:2em;color:#6b7280;font-size:.9em} .wide{overflow-x:auto}
            </style></head><body>

            """
        out += "<h1>Cluster \(escape(status.cluster.value))</h1>\n"
        if let leader = status.leader {
            out += "<div class=\"banner ok\" id=\"leader\">Leader: <span id=\"leader-name\">\(escape(leader.value))</span></div>\n"
        } else {
            out += "<div class=\"banner bad\" id=\"leader\">No node holds the leader lock</div>\n"
        }
        var facts = ["synchronous_mode: \(status.config.synchronousMode.rawValue)"]
        if let standby = status.synchronousStandby { facts.append("synchronous standby: \(standby.value)") }
        if let last = status.lastFailover { facts.append("last failover: \(last.time) (\(last.node.value) \(last.detail))") }
        out += "<p>" + facts.map(escape).joined(separator: " · ") + "</p>\n"
        if let paused = status.paused { out += "<div class=\"banner warn\">Automatic failover is PAUSED (\(escape(paused)))</div>\n" }
        if let s = status.scheduledSwitchover {
            out += "<div class=\"banner warn\">Scheduled switchover: \(escape("\(s.from.value) → \(s.to.value) at \(s.atText), asked by \(s.by)"))</div>\n"
        }
        out += "<h2>Nodes</h2>\n<div class=\"wide\"><table id=\"nodes\"><tr>" + StatusView.columns.map { "<th>\(escape($0))</th>" }.joined() + "</tr>\n"
        for node in status.nodes.sorted(by: { $0.registration.name < $1.registration.name }) {
            let leading = node.holdsLeaderLock ? " class=\"leader\"" : ""
            out += "<tr\(leading) data-node=\"\(escape(node.registration.name.value))\">" + status.row(node).map { "<td>\(escape($0))</td>" }.joined() + "</tr>\n"
        }
        out += "</table></div>\n"
        out += "<h2>If the primary failed now</h2>\n<div id=\"explain\">"
        if explanation.paused {
            out += "<div class=\"banner warn\">Nobody would take over: automatic failover is paused.</div>"
        } else if let winner = explanation.winner {
            out += "<div class=\"banner ok\"><span id=\"winner\">\(escape(winner.value))</span> would take over.</div>"
        } else {
            out += "<div class=\"banner bad\">Nobody would take over: no node is eligible.</div>"
        }
        if !explanation.ineligible.isEmpty {
            out += "<ul>" + explanation.ineligible.map { "<li><b>\(escape($0.node.value))</b>: \(escape($0.reason))</li>" }.joined() + "</ul>"
        }
        out += "</div>\n"
        let notes = status.problems.map { ("problem", $0) } + status.warnings.map { ("warning", $0) }
        if !notes.isEmpty {
            out += "<h2>Look at</h2>\n<ul>" + notes.map { "<li>\(escape($0.0)): \(escape($0.1))</li>" }.joined() + "</ul>\n"
        }
        out += "<h2>Last events</h2>\n<table id=\"events\"><tr><th>Time</th><th>Node</th><th>Kind</th><th>Detail</th></tr>\n"
        for e in status.events.reversed() {
            out += "<tr><td>\(escape(e.time))</td><td>\(escape(e.node.value))</td><td>\(escape(e.kind))</td><td>\(escape(e.detail))</td></tr>\n"
        }
        out += "</table>\n"
        out += "<footer>As \(escape(answeredBy.value))'s monitor sees the cluster, \(escape(time)). Refreshes every 2 s. "
        out += "The same as <code>baton status</code> and <code>baton explain</code>; JSON at <a href=\"/cluster\">/cluster</a>, metrics at <a href=\"/metrics\">/metrics</a>.</footer>\n"
        out += "</body></html>\n"
        return out
    }

    /// Text safe inside HTML elements and quoted attributes.
    public static func escape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for c in text {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.append(c)
            }
        }
        return out
    }
}
