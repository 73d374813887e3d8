// swift-tools-version: 6.2
import Foundation
import PackageDescription

// SwiftPM names a path dependency after its directory, which depends on the checkout.
let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().lastPathComponent

// The benchmark is its own package so that the main package builds without SQLite and
// RocksDB: `swift run -c release --package-path Benchmarks topgun-bench`.
let package = Package(
    name: "TopGunBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        .target(
            name: "CBaselines",
            linkerSettings: [.linkedLibrary("lmdb"), .linkedLibrary("sqlite3"), .linkedLibrary("rocksdb")]
        ),
        .executableTarget(
            name: "topgun-bench",
            dependencies: [
                "CBaselines",
                .product(name: "TopGun", package: root),
                .product(name: "TopGunReplication", package: root),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
