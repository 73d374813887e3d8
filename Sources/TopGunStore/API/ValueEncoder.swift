import Foundation
import TopGunCore

/// Encodes `Encodable` values straight to `Value` (no JSON text in between), so every
/// number keeps its type and exact value, a non-finite double stays a double, and dates
/// and binary data follow a strategy you choose.
///
/// ```swift
/// var encoder = ValueEncoder()
/// encoder.dateStrategy = .iso8601
/// let value = try encoder.encode(event)
/// ```
public struct ValueEncoder: Sendable {
    /// How a `Date` is stored.
    public enum DateStrategy: Sendable {
        /// Integer milliseconds since 1970 (the default: sorts and range-queries as a number).
        case millisecondsSince1970
        /// Seconds since 1970 as a double.
        case secondsSince1970
        /// An ISO 8601 string with fractional seconds, in UTC.
        case iso8601
        /// `Date`'s own `Codable` form (seconds since 2001 as a double).
        case deferredToDate
    }

    /// How `Data` is stored.
    public enum DataStrategy: Sendable {
        /// As `Value.bytes` (the default).
        case bytes
        /// As a base64 string.
        case base64
    }

    /// How dates are stored (integer milliseconds since 1970 by default).
    public var dateStrategy: DateStrategy = .millisecondsSince1970
    /// How `Data` is stored (`Value.bytes` by default).
    public var dataStrategy: DataStrategy = .bytes

    /// An encoder with the default strategies.
    public init() {}

    /// The `Value` form of `value`.
    ///
    /// - Throws: `StoreError(.invalidValue)` for what a `Value` cannot hold (an unsigned
    ///   integer above `Int64.max`, a value that encodes nothing).
    public func encode<T: Encodable>(_ value: T) throws -> Value {
        let slot = Slot()
        do {
            try EncoderState(options: self, slot: slot, codingPath: []).encode(value)
        } catch let error as StoreError {
            throw error
        } catch {
            throw StoreError(.invalidValue, "cannot encode \(T.self): \(error)", underlying: error)
        }
        guard let result = slot.resolve() else {
            throw StoreError(.invalidValue, "\(T.self) encoded no value")
        }
        return result
    }
}

/// One node of the value being built; containers fill it in place.
final class Slot {
    var value: Value?
    var map: [String: Slot]?
    var array: [Slot]?

    func resolve() -> Value? {
        if let map { return .map(map.compactMapValues { $0.resolve() }) }
        if let array { return .array(array.map { $0.resolve() ?? .null }) }
        return value
    }
}

/// Encoding key used for array elements and super encoders.
struct IndexKey: CodingKey {
    var stringValue: String
    var intValue: Int?
    init(stringValue: String) { self.stringValue = stringValue; intValue = Int(stringValue) }
    init(intValue: Int) { stringValue = String(intValue); self.intValue = intValue }
    static let `super` = IndexKey(stringValue: "super")
}

struct EncoderState: Encoder {
    let options: ValueEncoder
    let slot: Slot
    let codingPath: [any CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    /// Encodes `value` into this state's slot, taking the strategies' types aside.
    func encode<T: Encodable>(_ value: T) throws {
        switch value {
        case let v as Value: slot.value = v
        case let date as Date:
            switch options.dateStrategy {
            case .millisecondsSince1970:
                let ms = (date.timeIntervalSince1970 * 1_000).rounded()
                guard let exact = Int64(exactly: ms) else {
                    throw EncodingError.invalidValue(date, .init(codingPath: codingPath, debugDescription: "date out of range"))
                }
                slot.value = .int(exact)
            case .secondsSince1970: slot.value = .double(date.timeIntervalSince1970)
            case .iso8601: slot.value = .string(Self.iso8601().string(from: date))
            case .deferredToDate: try date.encode(to: self)
            }
        case let data as Data:
            switch options.dataStrategy {
            case .bytes: slot.value = .bytes(Array(data))
            case .base64: slot.value = .string(data.base64EncodedString())
            }
        case let url as URL: slot.value = .string(url.absoluteString)
        default: try value.encode(to: self)
        }
    }

    static func iso8601() -> ISO8601DateFormatter {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f
    }

    func child(_ key: any CodingKey, _ slot: Slot) -> EncoderState {
        EncoderState(options: options, slot: slot, codingPath: codingPath + [key])
    }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        if slot.map == nil { slot.map = [:] }
        return KeyedEncodingContainer(KeyedContainer<Key>(state: self))
    }

    func unkeyedContainer() -> any UnkeyedEncodingContainer {
        if slot.array == nil { slot.array = [] }
        return UnkeyedContainer(state: self)
    }

    func singleValueContainer() -> any SingleValueEncodingContainer { SingleContainer(state: self) }

    /// The `Value` of a primitive, or nil when `T` is not one.
    static func primitive<T>(_ value: T, _ path: [any CodingKey]) throws -> Value? {
        switch value {
        case let v as Bool: return .bool(v)
        case let v as String: return .string(v)
        case let v as Double: return .double(v)
        case let v as Float: return .double(Double(v))
        case let v as any BinaryInteger:
            guard let i = Int64(exactly: v) else {
                throw EncodingError.invalidValue(value, .init(codingPath: path, debugDescription: "\(v) is outside the Int64 range"))
            }
            return .int(i)
        default: return nil
        }
    }

    struct KeyedContainer<Key: CodingKey>: KeyedEncodingContainerProtocol {
        let state: EncoderState
        var codingPath: [any CodingKey] { state.codingPath }

        func slot(_ key: Key) -> Slot {
            let s = Slot()
            state.slot.map![key.stringValue] = s
            return s
        }

        mutating func encodeNil(forKey key: Key) throws { slot(key).value = .null }
        mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
            let s = slot(key)
            if let p = try EncoderState.primitive(value, codingPath + [key]) { s.value = p } else { try state.child(key, s).encode(value) }
        }
        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type, forKey key: Key) -> KeyedEncodingContainer<NestedKey> {
            state.child(key, slot(key)).container(keyedBy: keyType)
        }
        mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
            state.child(key, slot(key)).unkeyedContainer()
        }
        mutating func superEncoder() -> any Encoder { state.child(IndexKey.super, slot(Key(stringValue: "super")!)) }
        mutating func superEncoder(forKey key: Key) -> any Encoder { state.child(key, slot(key)) }
    }

    struct UnkeyedContainer: UnkeyedEncodingContainer {
        let state: EncoderState
        var codingPath: [any CodingKey] { state.codingPath }
        var count: Int { state.slot.array!.count }

        func next() -> (Slot, IndexKey) {
            let s = Slot()
            let key = IndexKey(intValue: count)
            state.slot.array!.append(s)
            return (s, key)
        }

        mutating func encodeNil() throws { next().0.value = .null }
        mutating func encode<T: Encodable>(_ value: T) throws {
            let (s, key) = next()
            if let p = try EncoderState.primitive(value, codingPath + [key]) { s.value = p } else { try state.child(key, s).encode(value) }
        }
        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
            let (s, key) = next()
            return state.child(key, s).container(keyedBy: keyType)
        }
        mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
            let (s, key) = next()
            return state.child(key, s).unkeyedContainer()
        }
        mutating func superEncoder() -> any Encoder {
            let (s, key) = next()
            return state.child(key, s)
        }
    }

    struct SingleContainer: SingleValueEncodingContainer {
        let state: EncoderState
        var codingPath: [any CodingKey] { state.codingPath }

        mutating func encodeNil() throws { state.slot.value = .null }
        mutating func encode<T: Encodable>(_ value: T) throws {
            if let p = try EncoderState.primitive(value, codingPath) { state.slot.value = p } else { try state.encode(value) }
        }
    }
}
