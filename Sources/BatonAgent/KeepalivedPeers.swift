import BatonSettings
import BatonCore
import Foundation
import Logging

/// Keeps this node's keepalived.conf naming every other registered node as a unicast VRRP peer
/// (`--vrrp-unicast`), and reloads keepalived when that list changes: a node that joins or is removed
/// is added to or dropped from every node's file within a loop. Only Baton's block of the file is
/// touched, the file is replaced atomically and only on change. Owned by the monitor's loop.
struct KeepalivedPeers {
    let logger: Logger
    /// Asks the running keepalived to re-read its file; returns its PID. Replaced in tests.
    let reload: @Sendable (_ pidFile: String) throws -> Int32
    private var warnings = RepeatedWarnings()
    /// What the file was last brought in step with (its path, this node's address, the peers'): the
    /// file is read only when that changes, not every loop.
    private var inStep: [String]?

    init(logger: Logger, reload: @escaping @Sendable (_ pidFile: String) throws -> Int32 = KeepalivedPeers.signalKeepalived) {
        self.logger = logger
        self.reload = reload
    }

    mutating func reconcile(settings: BootstrapSettings, registrations: [NodeName: NodeRegistration]) {
        guard settings.vrrpUnicast, settings.virtualIP != nil else { return }
        let path = settings.keepalivedConf.value
        let peers = registrations.values.filter { $0.name != settings.node }.map(\.address)
        let addresses = [path, settings.address.value] + peers.map(\.value).sorted()
        guard addresses != inStep else { return }
        do {
            let text: String
            do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
                throw AgentError("cannot read \(path) (\(error.localizedDescription)); rerun bootstrap to write it")
            }
            let wanted: String
            do { wanted = try KeepalivedUnicast.apply(to: text, source: settings.address, peers: peers) } catch {
                throw AgentError("\(path): \(error.message)")
            }
            guard wanted != text else {
                warnings.clear()
                inStep = addresses
                return
            }
            let mode = ((try? FileManager.default.attributesOfItem(atPath: path))?[.posixPermissions] as? NSNumber)?.uint16Value ?? 0o644
            _ = try AtomicFile.write(wanted, to: path, mode: mode_t(mode))
            let listed = KeepalivedUnicast.peers(in: wanted)?.joined(separator: " ") ?? ""
            do {
                let pid = try reload(settings.keepalivedPidFile.value)
                logger.notice("keepalived's unicast peers changed; reloaded it", metadata: ["keepalived.peers": "\(listed)", "keepalived.pid": "\(pid)"])
            } catch {
                logger.warning(
                    "keepalived's unicast peers changed, but keepalived could not be reloaded; it reads them when it starts",
                    metadata: ["keepalived.peers": "\(listed)", "error": "\(error)"])
            }
            warnings.clear()
            inStep = addresses
        } catch {
            warnings.warning(logger, "Cannot update keepalived's unicast peers", metadata: ["error": "\(error)"])
        }
    }

    /// SIGHUP to the keepalived whose PID the file names — only if that process is keepalived.
    static func signalKeepalived(pidFile: String) throws -> Int32 {
        guard let text = try? String(contentsOfFile: pidFile, encoding: .utf8) else {  // ignored: no file means not running
            throw AgentError("keepalived is not running (no PID file \(pidFile))")
        }
        guard let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 1 else {
            throw AgentError("\(pidFile) does not hold a PID")
        }
        let comm = (try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        guard comm == "keepalived" else { throw AgentError("\(pidFile) names PID \(pid), which is not a running keepalived") }
        guard kill(pid, SIGHUP) == 0 else { throw AgentError("cannot signal keepalived (PID \(pid)): \(String(cString: strerror(errno)))") }
        return pid
    }
}
