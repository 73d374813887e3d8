import Foundation
import TopGunCore

/// Decodes `Decodable` values straight from `Value` (no JSON text in between); the
/// counterpart of `ValueEncoder`, with the same date and data strategies.
public struct ValueDecoder: Sendable {
    /// How dates were stored; must match the encoder's.
    public var dateStrategy: ValueEncoder.DateStrategy = .millisecondsSince1970
    /// How `Data` was stored; must match the encoder's.
    public var dataStrategy: ValueEncoder.DataStrategy = .bytes

    /// A decoder with the default strategies.
    public init() {}

    /// A `T` read from `value`.
    ///
    /// - Throws: `StoreError(.invalidValue)` naming the coding path when the value does
    ///   not have `T`'s shape (a missing key, another type, a number out of range).
    public func decode<T: Decodable>(_ type: T.Type, from value: Value) throws -> T {
        do {
            return try DecoderState(options: self, value: value, codingPath: []).decode(T.self)
        } catch let error as DecodingError {
            throw StoreError(.invalidValue, "cannot decode \(T.self): \(Self.describe(error))", underlying: error)
        }
    }

    static func describe(_ error: DecodingError) -> String {
        let context: DecodingError.Context
        switch error {
        case .typeMismatch(_, let c), .valueNotFound(_, let c), .keyNotFound(_, let c), .dataCorrupted(let c): context = c
        @unknown default: return "\(error)"
        }
        let path = context.codingPath.map(\.stringValue).joined(separator: ".")
        return path.isEmpty ? context.debugDescription : "\(path): \(context.debugDescription)"
    }
}

struct DecoderState: Decoder {
    let options: ValueDecoder
    let value: Value
    let codingPath: [any CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func mismatch<T>(_ type: T.Type, _ path: [any CodingKey]? = nil) -> DecodingError {
        .typeMismatch(type, .init(codingPath: path ?? codingPath, debugDescription: "expected \(type), found \(Self.kind(of: value))"))
    }

    static func kind(of value: Value) -> String {
        switch value {
        case .null: "null"
        case .bool: "a boolean"
        case .int: "an integer"
        case .double: "a double"
        case .string: "a string"
        case .bytes: "bytes"
        case .array: "an array"
        case .map: "a map"
        }
    }

    /// Decodes a `T` from this state's value, taking the strategies' types aside.
    func decode<T: Decodable>(_ type: T.Type) throws -> T {
        if let p = try primitive(type) { return p }
        switch type {
        case is Value.Type: return value as! T
        case is Date.Type: return try decodeDate() as! T
        case is Data.Type: return try decodeData() as! T
        case is URL.Type:
            guard case .string(let s) = value, let url = URL(string: s) else { throw mismatch(URL.self) }
            return url as! T
        default: return try T(from: self)
        }
    }

    private func decodeDate() throws -> Date {
        switch (options.dateStrategy, value) {
        case (.millisecondsSince1970, .int(let ms)): return Date(timeIntervalSince1970: Double(ms) / 1_000)
        case (.millisecondsSince1970, .double(let ms)): return Date(timeIntervalSince1970: ms / 1_000)
        case (.secondsSince1970, .double(let s)): return Date(timeIntervalSince1970: s)
        case (.secondsSince1970, .int(let s)): return Date(timeIntervalSince1970: Double(s))
        case (.iso8601, .string(let s)):
            let formatter = EncoderState.iso8601()
            if let date = formatter.date(from: s) { return date }
            formatter.formatOptions = [.withInternetDateTime]
            if let date = formatter.date(from: s) { return date }
            throw DecodingError.dataCorrupted(.init(codingPath: codingPath, debugDescription: "not an ISO 8601 date: \(s)"))
        case (.deferredToDate, _): return try Date(from: self)
        default: throw mismatch(Date.self)
        }
    }

    private func decodeData() throws -> Data {
        switch (options.dataStrategy, value) {
        case (.bytes, .bytes(let b)): return Data(b)
        case (.base64, .string(let s)):
            guard let data = Data(base64Encoded: s) else {
                throw DecodingError.dataCorrupted(.init(codingPath: codingPath, debugDescription: "not base64"))
            }
            return data
        default: throw mismatch(Data.self)
        }
    }

    /// The primitive `T` held by the value, nil when `T` is not a primitive type.
    func primitive<T>(_ type: T.Type) throws -> T? {
        switch type {
        case is Bool.Type:
            guard case .bool(let b) = value else { throw mismatch(type) }
            return (b as! T)
        case is String.Type:
            guard case .string(let s) = value else { throw mismatch(type) }
            return (s as! T)
        case is Double.Type: return (try number() as! T)
        case is Float.Type: return (Float(try number()) as! T)
        case let integer as any FixedWidthInteger.Type:
            let exact: (any FixedWidthInteger)?
            switch value {
            case .int(let i): exact = integer.init(exactly: i)
            case .double(let d): exact = integer.init(exactly: d)
            default: throw mismatch(type)
            }
            guard let exact else {
                throw DecodingError.dataCorrupted(.init(codingPath: codingPath, debugDescription: "\(value) does not fit \(type)"))
            }
            return (exact as! T)
        default: return nil
        }
    }

    private func number() throws -> Double {
        switch value {
        case .double(let d): return d
        case .int(let i): return Double(i)
        default: throw mismatch(Double.self)
        }
    }

    func child(_ value: Value, _ key: any CodingKey) -> DecoderState {
        DecoderState(options: options, value: value, codingPath: codingPath + [key])
    }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        guard case .map(let fields) = value else { throw mismatch([String: Value].self) }
        return KeyedDecodingContainer(KeyedContainer<Key>(state: self, fields: fields))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        guard case .array(let elements) = value else { throw mismatch([Value].self) }
        return UnkeyedContainer(state: self, elements: elements)
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer { SingleContainer(state: self) }

    struct KeyedContainer<Key: CodingKey>: KeyedDecodingContainerProtocol {
        let state: DecoderState
        let fields: [String: Value]
        var codingPath: [any CodingKey] { state.codingPath }
        var allKeys: [Key] { fields.keys.compactMap { Key(stringValue: $0) } }

        func contains(_ key: Key) -> Bool { fields[key.stringValue] != nil }

        func field(_ key: Key) throws -> DecoderState {
            guard let value = fields[key.stringValue] else {
                throw DecodingError.keyNotFound(key, .init(codingPath: codingPath, debugDescription: "no field \(key.stringValue)"))
            }
            return state.child(value, key)
        }

        func decodeNil(forKey key: Key) throws -> Bool { try field(key).value == .null }
        func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T { try field(key).decode(type) }
        func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws -> KeyedDecodingContainer<NestedKey> {
            try field(key).container(keyedBy: type)
        }
        func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer { try field(key).unkeyedContainer() }
        func superDecoder() throws -> any Decoder { try field(Key(stringValue: "super")!) }
        func superDecoder(forKey key: Key) throws -> any Decoder { try field(key) }
    }

    struct UnkeyedContainer: UnkeyedDecodingContainer {
        let state: DecoderState
        let elements: [Value]
        var currentIndex = 0
        var codingPath: [any CodingKey] { state.codingPath }
        var count: Int? { elements.count }
        var isAtEnd: Bool { currentIndex >= elements.count }

        mutating func next() throws -> DecoderState {
            let key = IndexKey(intValue: currentIndex)
            guard !isAtEnd else {
                throw DecodingError.valueNotFound(Value.self, .init(codingPath: codingPath + [key], debugDescription: "the array has \(elements.count) elements"))
            }
            defer { currentIndex += 1 }
            return state.child(elements[currentIndex], key)
        }

        mutating func decodeNil() throws -> Bool {
            guard !isAtEnd, elements[currentIndex] == .null else { return false }
            currentIndex += 1
            return true
        }
        mutating func decode<T: Decodable>(_ type: T.Type) throws -> T { try next().decode(type) }
        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<NestedKey> {
            try next().container(keyedBy: type)
        }
        mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer { try next().unkeyedContainer() }
        mutating func superDecoder() throws -> any Decoder { try next() }
    }

    struct SingleContainer: SingleValueDecodingContainer {
        let state: DecoderState
        var codingPath: [any CodingKey] { state.codingPath }
        func decodeNil() -> Bool { state.value == .null }
        func decode<T: Decodable>(_ type: T.Type) throws -> T { try state.decode(type) }
    }
}
