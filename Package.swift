// swift-tools-version: 6.2
import PackageDescription

let argumentParser: Target.Dependency = .product(name: "ArgumentParser", package: "swift-argument-parser")
let propertyBased: Target.Dependency = .product(name: "PropertyBased", package: "swift-property-based")
let nioCore: Target.Dependency = .product(name: "NIOCore", package: "swift-nio")
let nioPosix: Target.Dependency = .product(name: "NIOPosix", package: "swift-nio")
let logging: Target.Dependency = .product(name: "Logging", package: "swift-log")
let serviceLifecycle: Target.Dependency = .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")
let unixSignals: Target.Dependency = .product(name: "UnixSignals", package: "swift-service-lifecycle")
let prometheus: Target.Dependency = .product(name: "Prometheus", package: "swift-prometheus")
let nioSSL: Target.Dependency = .product(name: "NIOSSL", package: "swift-nio-ssl")
let nioHTTP1: Target.Dependency = .product(name: "NIOHTTP1", package: "swift-nio")
let nioWebSocket: Target.Dependency = .product(name: "NIOWebSocket", package: "swift-nio")
let crypto: Target.Dependency = .product(name: "Crypto", package: "swift-crypto")
let jwtKit: Target.Dependency = .product(name: "JWTKit", package: "jwt-kit")

let package = Package(
    name: "TopGun",
    // Synchronization (Mutex, Atomic) needs these; RawSpan back-deploys with Swift 6.2.
    platforms: [.macOS(.v15), .iOS(.v18), .tvOS(.v18), .watchOS(.v11), .visionOS(.v2)],
    products: [
        // The embedded database: `import TopGunStore` (and `TopGunQuery` for queries).
        .library(name: "TopGun", targets: ["TopGunCore", "TopGunStore", "TopGunQuery"]),
        // Replica nodes and sync: `import TopGunReplication`.
        .library(name: "TopGunReplication", targets: ["TopGunReplication"]),
        // The typed LMDB binding on its own.
        .library(name: "LMDB", targets: ["LMDB"]),
        .executable(name: "topgun", targets: ["topgun"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/x-sheep/swift-property-based", from: "2.0.1"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-crypto", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/vapor/jwt-kit", from: "5.7.1"),
    ],
    targets: [
        .systemLibrary(
            name: "CLMDB",
            pkgConfig: "lmdb",
            providers: [.apt(["liblmdb-dev", "pkg-config"]), .brew(["lmdb", "pkg-config"])]
        ),
        .systemLibrary(
            name: "CLZ4",
            pkgConfig: "liblz4",
            providers: [.apt(["liblz4-dev", "pkg-config"]), .brew(["lz4", "pkg-config"])]
        ),
        .target(name: "LMDB", dependencies: ["CLMDB"]),
        .target(name: "TopGunCore"),
        .target(name: "TopGunStore", dependencies: ["LMDB", "TopGunCore"]),
        .target(name: "TopGunQuery", dependencies: ["TopGunStore", "TopGunCore"]),
        .target(
            name: "TopGunReplication",
            dependencies: ["TopGunStore", "TopGunCore", "CLZ4", nioCore, nioPosix, nioSSL, nioHTTP1, nioWebSocket, crypto, jwtKit, logging]
        ),
        .executableTarget(name: "topgun", dependencies: [
                "TopGunStore", "TopGunQuery", "TopGunReplication", "TopGunCore", argumentParser, logging, serviceLifecycle, unixSignals,
                prometheus,
            ]),
        .target(
            name: "TopGunTestSupport",
            dependencies: ["TopGunCore", "TopGunStore", propertyBased],
            path: "Tests/TopGunTestSupport"
        ),
        .testTarget(name: "LMDBTests", dependencies: ["LMDB", "TopGunTestSupport"]),
        .testTarget(
            name: "TopGunCoreTests",
            dependencies: ["TopGunCore", "TopGunTestSupport", propertyBased],
            exclude: []
        ),
        .testTarget(name: "TopGunStoreTests", dependencies: ["TopGunStore", "TopGunTestSupport"]),
        .testTarget(name: "TopGunQueryTests", dependencies: ["TopGunQuery", "TopGunStore", "TopGunTestSupport"]),
        .testTarget(name: "TopGunCLITests", dependencies: ["TopGunTestSupport", "TopGunStore"]),
        .target(
            name: "TopGunSimulation",
            dependencies: ["TopGunStore", "TopGunReplication", "TopGunCore", "TopGunTestSupport"],
            path: "Tests/TopGunSimulation"
        ),
        .testTarget(name: "TopGunSimulationTests", dependencies: ["TopGunSimulation", "TopGunTestSupport"]),
        .testTarget(
            name: "TopGunReplicationTests",
            dependencies: [
                "TopGunReplication", "TopGunStore", "TopGunTestSupport", nioCore, nioPosix, nioSSL, crypto, jwtKit, logging,
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
