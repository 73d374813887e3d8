/// Finds the first object member name that occurs twice in one JSON object, at any
/// depth. RFC 7519 §4 lets a JWT parser reject such a token or take the last value;
/// JSON decoders take either, so a token is refused before any decoder reads it.
enum StrictJSON {
    /// Why `bytes` is refused: a repeated member name, or not JSON at all; nil when it
    /// is one JSON value whose objects each name their members once.
    static func refusal(_ bytes: [UInt8]) -> String? {
        var scanner = Scanner(bytes: bytes)
        do throws(Failure) {
            try scanner.value(depth: 0)
            scanner.skipSpace()
            guard scanner.at == bytes.count else { throw Failure.invalid("bytes after the JSON value") }
            return nil
        } catch {
            switch error {
            case .duplicate(let name): return "duplicate claim \"\(name)\""
            case .invalid(let why): return "not JSON (\(why))"
            }
        }
    }

    enum Failure: Error {
        case duplicate(String)
        case invalid(String)
    }

    struct Scanner {
        let bytes: [UInt8]
        var at = 0
        static let maxDepth = 32

        mutating func skipSpace() {
            while at < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[at]) { at += 1 }
        }

        mutating func value(depth: Int) throws(Failure) {
            guard depth < Self.maxDepth else { throw .invalid("nested too deep") }
            skipSpace()
            guard at < bytes.count else { throw .invalid("unexpected end") }
            switch bytes[at] {
            case UInt8(ascii: "{"):
                at += 1
                var names = Set<[UInt8]>()
                try members(closing: UInt8(ascii: "}")) { (scanner: inout Scanner) throws(Failure) in
                    scanner.skipSpace()
                    let name = try scanner.string()
                    // Names compare by their decoded text: "s\u0075b" is "sub".
                    let decoded = Self.decoded(name)
                    guard names.insert(Array(decoded.utf8)).inserted else { throw .duplicate(decoded) }
                    scanner.skipSpace()
                    try scanner.expect(UInt8(ascii: ":"))
                    try scanner.value(depth: depth + 1)
                }
            case UInt8(ascii: "["):
                at += 1
                try members(closing: UInt8(ascii: "]")) { (scanner: inout Scanner) throws(Failure) in try scanner.value(depth: depth + 1) }
            case UInt8(ascii: "\""):
                _ = try string()
            default:
                // Numbers, true, false, null: a run of their characters.
                let start = at
                while at < bytes.count, Self.isScalarByte(bytes[at]) { at += 1 }
                guard at > start else { throw .invalid("unexpected byte at \(at)") }
            }
        }

        /// The comma-separated members of an object or array up to `close` (the
        /// opening byte already read), each read by `member`.
        mutating func members(closing close: UInt8, _ member: (inout Scanner) throws(Failure) -> Void) throws(Failure) {
            skipSpace()
            if at < bytes.count, bytes[at] == close {
                at += 1
                return
            }
            while true {
                try member(&self)
                skipSpace()
                guard at < bytes.count else { throw .invalid("unexpected end") }
                if bytes[at] == UInt8(ascii: ",") {
                    at += 1
                    continue
                }
                try expect(close)
                return
            }
        }

        mutating func expect(_ byte: UInt8) throws(Failure) {
            guard at < bytes.count, bytes[at] == byte else { throw .invalid("expected \(Character(Unicode.Scalar(byte))) at \(at)") }
            at += 1
        }

        /// A string's raw bytes between its quotes (escapes undecoded).
        mutating func string() throws(Failure) -> ArraySlice<UInt8> {
            try expect(UInt8(ascii: "\""))
            let start = at
            while at < bytes.count {
                switch bytes[at] {
                case UInt8(ascii: "\""):
                    defer { at += 1 }
                    return bytes[start..<at]
                case UInt8(ascii: "\\"):
                    at += 2
                default:
                    at += 1
                }
            }
            throw .invalid("unterminated string")
        }

        static func isScalarByte(_ b: UInt8) -> Bool {
            (b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9")) || (b >= UInt8(ascii: "a") && b <= UInt8(ascii: "z"))
                || b == UInt8(ascii: "-") || b == UInt8(ascii: "+") || b == UInt8(ascii: ".") || b == UInt8(ascii: "E")
        }

        /// The text of a string's raw bytes, with `\uXXXX` and the one-letter escapes
        /// decoded (a surrogate pair's halves stay replacement characters: they never
        /// spell a claim name that matters).
        static func decoded(_ raw: ArraySlice<UInt8>) -> String {
            var scalars = String.UnicodeScalarView()
            var out: [UInt8] = []
            var i = raw.startIndex
            func flush() {
                scalars.append(contentsOf: String(decoding: out, as: UTF8.self).unicodeScalars)
                out.removeAll()
            }
            while i < raw.endIndex {
                let b = raw[i]
                guard b == UInt8(ascii: "\\"), i + 1 < raw.endIndex else {
                    out.append(b)
                    i += 1
                    continue
                }
                let e = raw[i + 1]
                i += 2
                switch e {
                case UInt8(ascii: "u") where i + 4 <= raw.endIndex:
                    flush()
                    let hex = String(decoding: raw[i..<(i + 4)], as: UTF8.self)
                    scalars.append(UInt32(hex, radix: 16).flatMap(Unicode.Scalar.init) ?? "\u{FFFD}")
                    i += 4
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                default: out.append(e)
                }
            }
            flush()
            return String(scalars)
        }
    }
}
