// libFuzzer entry point for the value codec and the CRDT state decoders.
// Built by Fuzz/run.sh together with the TopGunCore sources.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzValue(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    if let value = try? Value(messagePack: bytes) {
        // Whatever decodes must re-encode and decode to the same value.
        let again = try? Value(messagePack: value.encoded)
        if again?.encoded != value.encoded { fatalError("re-encoding changed the value") }
        _ = try? ORSet(state: value)
        _ = try? PNCounter(state: value)
        _ = try? Value.field(atPath: "a.b", in: bytes)
    }
    return 0
}
