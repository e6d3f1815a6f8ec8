// swift-tools-version: 6.1
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6)
]

/// The modules the simulator runs (Baton's rules, the Consul store, the wire format, the simulator itself)
/// are optimized in debug builds too: `swift test` runs thousands of simulated clusters through them.
let simulatedSettings: [SwiftSetting] = swiftSettings + [.unsafeFlags(["-O"], .when(configuration: .debug))]

let package = Package(
    name: "baton",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "baton", targets: ["baton"]),
        .executable(name: "baton-watchdog", targets: ["BatonWatchdog"]),
        .executable(name: "consul-bench", targets: ["ConsulBench"]),
        .executable(name: "baton-chaos", targets: ["BatonChaos"]),
        .executable(name: "baton-sim", targets: ["BatonSimCommand"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.3"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        // C libraries from Debian's -dev packages.
        .systemLibrary(name: "CCurl", pkgConfig: "libcurl", providers: [.apt(["libcurl4-openssl-dev"])]),
        .systemLibrary(name: "CLibPQ", pkgConfig: "libpq", providers: [.apt(["libpq-dev"])]),
        // glibc's malloc.h (malloc_trim).
        .systemLibrary(name: "CMalloc"),
        // OpenSSL's libcrypto (HMAC-SHA-256), from Debian's libssl-dev.
        .systemLibrary(name: "CLibCrypto", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),

        // Consul's wire format: durations, keys, JSON shapes. Pure, shared by client and server.
        .target(name: "ConsulAPI", swiftSettings: simulatedSettings),
        // The async Consul client every part of Baton shares (libcurl underneath).
        .target(
            name: "BatonConsul",
            dependencies: ["CCurl", "ConsulAPI", .product(name: "Logging", package: "swift-log"), .product(name: "CoreMetrics", package: "swift-metrics")],
            swiftSettings: swiftSettings
        ),
        // A small HTTP server on SwiftNIO (bounded connections and bodies, optional TLS): the embedded
        // Consul server and the node API both run on it.
        .target(
            name: "BatonHTTP",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // The embedded server's state and its write rules, pure: what the server serves over HTTP and the
        // simulator runs in memory (InMemoryConsul).
        .target(name: "BatonConsulStore", dependencies: ["ConsulAPI"], swiftSettings: simulatedSettings),
        // The embedded single-node Consul-compatible server.
        .target(
            name: "BatonConsulServer",
            dependencies: [
                "BatonConsulStore",
                "ConsulAPI",
                "BatonConsul",
                "BatonHTTP",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // Finding and killing a data directory's PostgreSQL processes, and the watchdog's wire format:
        // C library only, shared by the monitor and the watchdog.
        .target(name: "BatonFence", dependencies: ["CBatonFence"], swiftSettings: swiftSettings),
        // `baton-watchdog`: the node's fencing watchdog, a small process of its own.
        // C only (no Swift runtime): its memory is locked whole and stays small.
        .executableTarget(
            name: "BatonWatchdog", dependencies: ["CBatonFence"], path: "Sources/BatonWatchdog",
            linkerSettings: [.unsafeFlags(["-Xlinker", "--as-needed"])]),
        // Finding and killing a data directory's PostgreSQL processes: the watchdog's and the monitor's rules.
        .target(name: "CBatonFence"),
        // libpq behind one module.
        // Process spawning that leaks no descriptor to daemons (posix_spawn with closefrom).
        .target(name: "CBatonSpawn"),
        .target(name: "BatonPostgres", dependencies: ["CLibPQ", "CBatonSpawn", "BatonCore", "BatonFence"], swiftSettings: swiftSettings),
        // Baton's decisions: pure functions over observed state.
        .target(name: "BatonCore", dependencies: ["ConsulAPI"], swiftSettings: simulatedSettings),
        // A node's settings (baton.yaml: flags, file and defaults) and the atomic file writes every
        // command makes: what bootstrap writes and the daemons read.
        .target(
            name: "BatonSettings",
            dependencies: ["BatonCore", .product(name: "Yams", package: "Yams")],
            swiftSettings: swiftSettings
        ),
        // `baton bootstrap`: create or join a cluster (the I/O around BatonCore's plan).
        .target(
            name: "BatonBootstrap",
            dependencies: [
                "BatonCore", "BatonConsul", "BatonPostgres", "BatonSettings", "ConsulAPI",
                .product(name: "Yams", package: "Yams"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // Signing and checking the node API's writes between members.
        .target(name: "BatonSigning", dependencies: ["BatonCore", "CLibCrypto"], swiftSettings: swiftSettings),
        // What runs on a node after bootstrap: keepalived's notify hook, status, cluster settings.
        .target(
            name: "BatonAgent",
            dependencies: [
                "BatonConsul", "BatonCore", "BatonFence", "BatonHTTP", "BatonPostgres", "BatonSettings", "BatonSigning", "CMalloc", "ConsulAPI",
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "baton",
            dependencies: [
                "BatonConsul", "BatonConsulServer", "BatonCore", "BatonFence", "BatonPostgres", "BatonBootstrap", "BatonSettings", "BatonAgent",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "ConsulBench",
            dependencies: ["BatonConsul", "ConsulAPI"],
            path: "Sources/ConsulBench",
            swiftSettings: swiftSettings
        ),
        // The chaos suite: a seeded fault schedule, the history checker and the report (pure), and the
        // runner that drives the namespace lab.
        .target(name: "BatonChaosCore", dependencies: ["ConsulAPI"], swiftSettings: swiftSettings),
        .executableTarget(
            name: "BatonChaos",
            dependencies: [
                "BatonChaosCore", "BatonConsul", "BatonCore", "BatonPostgres", "BatonProxy", "ConsulAPI",
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            path: "Sources/BatonChaos",
            swiftSettings: swiftSettings
        ),
        // The deterministic simulator: Baton's rules from BatonCore over simulated PostgreSQL and the embedded
        // server's own store, in virtual time, faults drawn by a seed, every invariant checked at every step.
        .target(name: "BatonSim", dependencies: ["BatonChaosCore", "BatonCore", "BatonConsulStore", "ConsulAPI"], swiftSettings: simulatedSettings),
        .executableTarget(name: "BatonSimCommand", dependencies: ["BatonSim", "BatonCore"], path: "Sources/BatonSimCommand", swiftSettings: swiftSettings),
        // Helpers the live tests share: child processes, free ports.
        // A TCP proxy that cuts or slows a link on request (the chaos suite's partitions, the tests').
        .target(name: "BatonProxy", swiftSettings: swiftSettings),
        .target(name: "BatonTestSupport", dependencies: ["BatonAgent", "BatonCore", "BatonFence", "BatonPostgres"], swiftSettings: swiftSettings),
        .testTarget(name: "ConsulAPITests", dependencies: ["ConsulAPI"], swiftSettings: swiftSettings),
        .testTarget(name: "BatonCoreTests", dependencies: ["BatonCore", "ConsulAPI"], swiftSettings: swiftSettings),
        .testTarget(name: "BatonChaosCoreTests", dependencies: ["BatonChaosCore"], swiftSettings: swiftSettings),
        .testTarget(name: "BatonSimTests", dependencies: ["BatonSim", "BatonCore"], swiftSettings: swiftSettings),
        .testTarget(
            name: "BatonBootstrapTests",
            dependencies: [
                "BatonAgent", "BatonBootstrap", "BatonConsul", "BatonConsulServer", "BatonCore", "BatonFence", "BatonPostgres", "BatonSettings",
                "BatonProxy", "BatonSigning", "BatonTestSupport", "ConsulAPI",
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "BatonAgentTests",
            dependencies: [
                "BatonAgent", "BatonBootstrap", "BatonConsul", "BatonConsulServer", "BatonCore", "BatonFence", "BatonProxy", "BatonSettings", "BatonSigning",
                "BatonTestSupport", "ConsulAPI",
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "ConsulConformanceTests",
            dependencies: ["BatonConsul", "BatonConsulServer", "BatonConsulStore", "ConsulAPI", "BatonTestSupport"],
            swiftSettings: swiftSettings
        ),
    ]
)
