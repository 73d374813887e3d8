/// The one total order of values used by queries, sorting and range indexes:
/// null < bool < number < string < bytes < array < map. Numbers compare by numeric
/// value (an int and a double can be equal), strings by Unicode code points (UTF-8
/// bytes), bytes and arrays lexicographically, maps by their sorted (key, value) pairs.
extension Value {
    var typeRank: Int {
        switch self {
        case .null: 0
        case .bool: 1
        case .int, .double: 2
        case .string: 3
        case .bytes: 4
        case .array: 5
        case .map: 6
        }
    }

    /// -1, 0 or 1 as `a` orders before, with, or after `b`.
    public static func compare(_ a: Value, _ b: Value) -> Int {
        let (ra, rb) = (a.typeRank, b.typeRank)
        if ra != rb { return ra < rb ? -1 : 1 }
        switch (a, b) {
        case (.null, .null): return 0
        case (.bool(let x), .bool(let y)): return x == y ? 0 : (x ? 1 : -1)
        case (.int(let x), .int(let y)): return x == y ? 0 : (x < y ? -1 : 1)
        case (.string(let x), .string(let y)):
            return compareUTF8(x, y)
        case (.bytes(let x), .bytes(let y)):
            if x == y { return 0 }
            return x.lexicographicallyPrecedes(y) ? -1 : 1
        case (.array(let x), .array(let y)):
            for (u, v) in zip(x, y) {
                let c = compare(u, v)
                if c != 0 { return c }
            }
            return x.count == y.count ? 0 : (x.count < y.count ? -1 : 1)
        case (.map(let x), .map(let y)):
            let kx = x.keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
            let ky = y.keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
            for (u, v) in zip(kx, ky) {
                let c = compare(.string(u), .string(v))
                if c != 0 { return c }
                let d = compare(x[u]!, y[v]!)
                if d != 0 { return d }
            }
            return kx.count == ky.count ? 0 : (kx.count < ky.count ? -1 : 1)
        default:
            return compareNumbers(a, b)
        }
    }

    /// Strings by their UTF-8 bytes (so by code points), never by canonical
    /// equivalence: two strings compare equal only when their bytes are equal, as in a
    /// range index.
    static func compareUTF8(_ a: String, _ b: String) -> Int {
        var a = a
        var b = b
        return a.withUTF8 { x in
            b.withUTF8 { y in
                let n = min(x.count, y.count)
                var i = 0
                while i < n {
                    if x[i] != y[i] { return x[i] < y[i] ? -1 : 1 }
                    i += 1
                }
                return x.count == y.count ? 0 : (x.count < y.count ? -1 : 1)
            }
        }
    }

    private static func compareNumbers(_ a: Value, _ b: Value) -> Int {
        switch (a, b) {
        case (.double(let x), .double(let y)): return x == y ? 0 : (x < y || (x.isNaN && !y.isNaN) ? -1 : 1)
        case (.int(let i), .double(let d)): return -compareDouble(d, i)
        case (.double(let d), .int(let i)): return compareDouble(d, i)
        default: return 0
        }
    }

    /// Compares a double with an integer exactly (no rounding of the integer).
    private static func compareDouble(_ d: Double, _ i: Int64) -> Int {
        if d.isNaN { return -1 }
        if d < -0x1p63 { return -1 }
        if d >= 0x1p63 { return 1 }
        let t = d.rounded(.down)
        let ti = Int64(t)
        if ti != i { return ti < i ? -1 : 1 }
        return d > t ? 1 : 0
    }
}

/// Order-preserving byte encoding of values, for index keys: comparing the bytes
/// gives `Value.compare`'s order for null, booleans, numbers, strings and bytes.
///
/// Layout: a type byte, then — numbers: the value as a sortable double followed by a
/// sortable int64 (so equal doubles order ints exactly); strings and bytes: the bytes
/// with 0x00 escaped as 0x00 0xFF, terminated by 0x00 0x00. Arrays and maps are
/// encoded as their canonical MessagePack after the type byte: stable, but ordered
/// by encoding rather than by `Value.compare`.
public enum OrderedKey {
    public static func encode(_ value: Value, into out: inout [UInt8]) {
        out.append(UInt8(0x10 + value.typeRank))
        switch value {
        case .null: break
        case .bool(let b): out.append(b ? 1 : 0)
        case .int(let i):
            appendSortable(Double(i), &out)
            out.appendBigEndian(UInt64(bitPattern: i) ^ (1 << 63))
        case .double(let d):
            appendSortable(d, &out)
            let clamped: Int64 = d.isNaN ? .min : (d >= 0x1p63 ? .max : (d < -0x1p63 ? .min : Int64(d.rounded(.down))))
            out.appendBigEndian(UInt64(bitPattern: clamped) ^ (1 << 63))
        case .string(let s): appendEscaped(s.utf8, &out)
        case .bytes(let b): appendEscaped(b, &out)
        case .array, .map: value.encode(into: &out)
        }
    }

    public static func encode(_ value: Value) -> [UInt8] {
        var out: [UInt8] = []
        encode(value, into: &out)
        return out
    }

    /// The encoding of a string prefix without its terminator: every string that
    /// starts with `prefix` has an encoding that starts with these bytes.
    public static func encodePrefix(_ prefix: String) -> [UInt8] {
        var out: [UInt8] = [UInt8(0x10 + Value.string("").typeRank)]
        for byte in prefix.utf8 {
            out.append(byte)
            if byte == 0 { out.append(0xFF) }
        }
        return out
    }

    static func appendSortable(_ d: Double, _ out: inout [UInt8]) {
        let d = d == 0 ? 0 : d  // -0.0 sorts with 0.0
        let bits = d.bitPattern
        out.appendBigEndian(d.sign == .minus ? ~bits : bits | (1 << 63))
    }

    static func appendEscaped(_ bytes: some Sequence<UInt8>, _ out: inout [UInt8]) {
        for byte in bytes {
            out.append(byte)
            if byte == 0 { out.append(0xFF) }
        }
        out.append(0)
        out.append(0)
    }
}
