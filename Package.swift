// swift-tools-version: 6.1
import PackageDescription

let argumentParser: Target.Dependency = .product(name: "ArgumentParser", package: "swift-argument-parser")
let propertyBased: Target.Dependency = .product(name: "PropertyBased", package: "swift-property-based")

let package = Package(
    name: "TopGun",
    products: [
        .library(name: "LMDB", targets: ["LMDB"]),
        .library(name: "TopGunCore", targets: ["TopGunCore"]),
        .library(name: "TopGunStore", targets: ["TopGunStore"]),
        .library(name: "TopGunQuery", targets: ["TopGunQuery"]),
        .executable(name: "topgun", targets: ["topgun"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/x-sheep/swift-property-based", from: "2.0.1"),
    ],
    targets: [
        .systemLibrary(
            name: "CLMDB",
            pkgConfig: "lmdb",
            providers: [.apt(["liblmdb-dev", "pkg-config"])]
        ),
        .systemLibrary(
            name: "CLZ4",
            pkgConfig: "liblz4",
            providers: [.apt(["liblz4-dev", "pkg-config"])]
        ),
        .target(name: "LMDB", dependencies: ["CLMDB"]),
        .target(name: "TopGunCore"),
        .target(name: "TopGunStore", dependencies: ["LMDB", "TopGunCore"]),
        .target(name: "TopGunQuery", dependencies: ["TopGunStore", "TopGunCore", "LMDB"]),
        .executableTarget(name: "topgun", dependencies: ["TopGunStore", "TopGunQuery", "TopGunCore", argumentParser]),
        .target(
            name: "TopGunTestSupport",
            dependencies: ["TopGunCore", propertyBased],
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
    ],
    swiftLanguageModes: [.v6]
)
