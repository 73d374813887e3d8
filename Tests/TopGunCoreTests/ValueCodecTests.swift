import PropertyBased
import Testing
import TopGunCore

@Suite(.timeLimit(.minutes(2)))
struct ValueCodecTests {
    @Test func roundTripsGeneratedValues() async throws {
        await propertyCheck(count: 1_000, input: Gen.document) { value in
            let decoded = try? Value(messagePack: value.encoded)
            #expect(decoded?.encoded == value.encoded)
            #expect(decoded == value)
        }
    }

    @Test(arguments: [
        (Value.int(0), [0x00] as [UInt8]), (.int(-1), [0xff]), (.int(127), [0x7f]), (.int(128), [0xcc, 0x80]),
        (.int(-33), [0xd0, 0xdf]), (.int(65_536), [0xce, 0, 1, 0, 0]), (.null, [0xc0]), (.bool(true), [0xc3]),
        (.string("a"), [0xa1, 0x61]), (Value.map(["b": 1, "a": 2]), [0x82, 0xa1, 0x61, 0x02, 0xa1, 0x62, 0x01]),
        (.double(Double(bitPattern: 0xfff5_f9dd_30cb_e4c0)), [0xcb, 0xff, 0xf5, 0xf9, 0xdd, 0x30, 0xcb, 0xe4, 0xc0]),
    ])
    func canonicalBytes(value: Value, bytes: [UInt8]) throws {
        #expect(value.encoded == bytes)
        #expect(try Value(messagePack: bytes) == value)
    }

    @Test func everyTruncationThrowsWithOffset() async throws {
        await propertyCheck(count: 300, input: Gen.document) { value in
            let bytes = value.encoded
            for cut in 0..<bytes.count {
                do {
                    _ = try Value(messagePack: Array(bytes[0..<cut]))
                    Issue.record("decoded a truncated value of \(cut) of \(bytes.count) bytes")
                } catch let error as ValueCodingError {
                    #expect(error.offset <= cut)
                } catch {
                    Issue.record("untyped error \(error)")
                }
            }
        }
    }

    @Test func randomBytesNeverTrap() async {
        await propertyCheck(count: 20_000, input: Gen.messagePackNoise) { bytes in
            do {
                let value = try Value(messagePack: bytes)
                #expect(try Value(messagePack: value.encoded) == value || value.encoded != bytes)
            } catch let error as ValueCodingError {
                #expect(error.offset >= 0 && error.offset <= bytes.count)
            } catch {
                Issue.record("untyped error \(error)")
            }
        }
    }

    /// A NaN equals itself and `-0.0` differs from `0.0`: equality follows the canonical
    /// bytes, so a decoded NaN compares equal to the value that was stored.
    @Test func doublesCompareByTheirBits() throws {
        let nan = Value.double(.nan)
        #expect(nan == nan)
        #expect(Set([nan, nan, .double(-.nan)]).count == 2)
        #expect(Value.double(0.0) != .double(-0.0))
        #expect(Value.array([nan]) == .array([.double(.nan)]))
        #expect(try Value(messagePack: nan.encoded) == nan)
    }

    @Test func hostileInputsGiveTypedErrors() {
        let cases: [([UInt8], ValueCodingError.Code, Int)] = [
            ([0xdd, 0xff, 0xff, 0xff, 0xff], .truncated, 5),  // array claims 4G elements
            ([0xc6, 0x7f, 0xff, 0xff, 0xff, 1], .truncated, 5),  // bin claims 2 GiB
            ([0xa2, 0xc3, 0x28], .invalidUTF8, 1),
            ([0x81, 0x01, 0x02], .invalidMapKey, 1),
            ([0x82, 0xa1, 0x61, 0x01, 0xa1, 0x61, 0x02], .invalidMapKey, 4),
            ([0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], .integerOverflow, 0),
            ([0xc1], .unsupportedType, 0),
            ([0xd4, 0x01, 0x02], .unsupportedType, 0),
            ([0xc0, 0xc0], .trailingBytes, 1),
            (Array(repeating: 0x91, count: 100) + [0xc0], .tooDeep, 65),
        ]
        for (bytes, code, offset) in cases {
            let error = #expect(throws: ValueCodingError.self) { try Value(messagePack: bytes) }
            #expect(error?.code == code, "\(bytes.prefix(8))")
            #expect(error?.offset == offset, "\(bytes.prefix(8))")
        }
    }

    @Test func fieldPaths() {
        let v: Value = ["user": ["address": ["city": "Oslo"]], "age": 31]
        #expect(v[path: "user.address.city"] == "Oslo")
        #expect(v[path: "age"] == 31)
        #expect(v[path: "user.missing"] == nil)
        #expect(v[path: "age.x"] == nil)
    }
}

struct ValuePathTests {
    @Test func fieldExtractionMatchesFullDecode() async {
        await propertyCheck(count: 1_000, input: Gen.document) { value in
            let bytes = value.encoded
            for path in ["k1", "k2.k3", "k5.k1.k7", "missing", "k10"] {
                let direct = try? bytes.withUnsafeBytes { try Value.field(atPath: path, in: $0) }
                #expect(direct == value[path: path], "\(path)")
            }
        }
    }
}
