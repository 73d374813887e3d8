import Foundation
import TopGunCore

extension Value {
    /// Converts a `JSONSerialization` object (dictionaries, arrays, strings, numbers,
    /// booleans, `NSNull`) to a `Value`; integers stay integers.
    ///
    /// - Throws: `StoreError(.invalidValue)` for anything JSON cannot hold.
    public init(jsonObject: Any) throws {
        switch jsonObject {
        case is NSNull: self = .null
        case let s as String: self = .string(s)
        case let n as NSNumber:
            switch String(cString: n.objCType) {
            case "c", "B": self = .bool(n.boolValue)
            case "d", "f":
                let d = n.doubleValue
                self = d.rounded() == d && abs(d) < 9.0e15 && !n.stringValue.contains(".") ? .int(Int64(d)) : .double(d)
            case "Q" where n.uint64Value > UInt64(Int64.max):
                throw StoreError(.invalidValue, "integer \(n.uint64Value) is outside the Int64 range")
            default: self = .int(n.int64Value)
            }
        case let a as [Any]: self = .array(try a.map { try Value(jsonObject: $0) })
        case let m as [String: Any]: self = .map(try m.mapValues { try Value(jsonObject: $0) })
        default: throw StoreError(.invalidValue, "not a JSON value: \(type(of: jsonObject))")
        }
    }

    /// Parses JSON text (any top-level value). Numbers are read from their text:
    /// integers are exact across the whole `Int64` range and refused beyond it.
    public init(json: String) throws {
        do {
            self = try JSONDecoder().decode(Value.self, from: Data(json.utf8))
        } catch let DecodingError.dataCorrupted(context) where context.debugDescription.contains("Int64 range") {
            throw StoreError(.invalidValue, context.debugDescription)
        } catch {
            throw StoreError(.invalidValue, "malformed JSON: \(Self.describe(error))")
        }
    }

    static func describe(_ error: any Error) -> String {
        if case DecodingError.dataCorrupted(let context) = error {
            return context.underlyingError.map { "\($0)" } ?? context.debugDescription
        }
        return error.localizedDescription
    }

    /// The value as a `JSONSerialization` object; bytes become base64 strings.
    public var jsonObject: Any {
        switch self {
        case .null: NSNull()
        case .bool(let b): b
        case .int(let i): i
        case .double(let d): d
        case .string(let s): s
        case .bytes(let b): Data(b).base64EncodedString()
        case .array(let a): a.map(\.jsonObject)
        case .map(let m): m.mapValues(\.jsonObject)
        }
    }

    /// Compact JSON text with sorted keys.
    public var json: String {
        let data = (try? JSONSerialization.data(withJSONObject: jsonObject, options: [.sortedKeys, .fragmentsAllowed])) ?? Data("null".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    /// Encodes a `Codable` value with a default `ValueEncoder` (dates as integer
    /// milliseconds since 1970, data as bytes).
    public init<T: Encodable>(encoding value: T) throws {
        self = try ValueEncoder().encode(value)
    }

    /// Decodes a `Codable` value with a default `ValueDecoder`.
    public func decode<T: Decodable>(as type: T.Type) throws -> T {
        try ValueDecoder().decode(type, from: self)
    }
}
