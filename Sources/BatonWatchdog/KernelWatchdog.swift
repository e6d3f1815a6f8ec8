import BatonFence

#if canImport(Glibc)
    import Glibc
#endif

/// The kernel's watchdog device (`/dev/watchdog`, e.g. the softdog module), as Patroni uses it: while
/// this node leads, the watchdog process pets the device at least once a second; if the whole machine
/// freezes — the watchdog process with it, so that it cannot fence — the device resets the machine
/// before a replica may take over. On standing down it is closed with the magic 'V', which disarms it.
struct KernelWatchdog {
    enum Mode: String {
        /// Not used.
        case off
        /// Used when the device can be opened; leading goes on without it otherwise.
        case automatic
        /// This node refuses to lead unless the device is open and accepted its timeout.
        case required
    }

    let mode: Mode
    let device: String
    let log: (String) -> Void
    private var descriptor: Int32 = -1
    private var lastPet: UInt64 = 0

    init(mode: Mode, device: String, log: @escaping (String) -> Void) {
        self.mode = mode
        self.device = device
        self.log = log
    }

    // _IOWR('W', 6, int): set the timeout in seconds.
    private static let setTimeout: UInt = 0xC004_5706

    /// Opens the device as leading starts (or pets it if open). Its timeout is what is left of the first
    /// lease less a second, at least a second: the device fires before a replica may take over (the
    /// deadline plus a margin), even counting from the last pet. false: it cannot guard as required.
    mutating func arm(deadline: UInt64, now: UInt64) -> Bool {
        guard mode != .off else { return true }
        if descriptor >= 0 {
            pet()
            return true
        }
        let fd = open(device, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else {
            log("cannot open the kernel watchdog \(device): \(String(cString: strerror(errno)))" + (mode == .required ? "; refusing to lead" : "; leading without it"))
            return mode != .required
        }
        let timeoutSeconds = Int32(max(1, (Int64(deadline) - Int64(now)) / 1_000_000_000 - 1))
        var timeout = timeoutSeconds
        if ioctl(fd, Self.setTimeout, &timeout) != 0 {
            let reason = String(cString: strerror(errno))
            if mode == .required {
                log("the kernel watchdog \(device) does not accept a \(timeoutSeconds) s timeout (\(reason)); refusing to lead")
                _ = write(fd, "V", 1)
                close(fd)
                return false
            }
            log("the kernel watchdog \(device) does not accept a \(timeoutSeconds) s timeout (\(reason)); it keeps its own")
        }
        descriptor = fd
        log("kernel watchdog \(device) armed (\(timeoutSeconds) s)")
        pet()
        return true
    }

    /// Pets the device while armed, at most once a second.
    mutating func keepAlive(now: UInt64, armed: Bool) {
        guard armed, descriptor >= 0, now &- lastPet >= 1_000_000_000 else { return }
        pet()
    }

    private mutating func pet() {
        _ = write(descriptor, "1", 1)
        lastPet = MonotonicClock.nanoseconds()
    }

    /// Disarms and closes the device (the magic close).
    mutating func standDown() {
        guard descriptor >= 0 else { return }
        _ = write(descriptor, "V", 1)
        close(descriptor)
        descriptor = -1
        log("kernel watchdog \(device) disarmed")
    }
}
