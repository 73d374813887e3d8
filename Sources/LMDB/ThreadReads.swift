#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The environments in which the calling thread has a read transaction open.
///
/// A write started inside a read of the same environment on the same thread would wait
/// for ever if the map has to grow (growing waits for that thread's own read), so
/// `Environment.write` checks here and stops with a message instead of deadlocking.
enum ThreadReads {
    private final class Open {
        var handles: [UInt] = []
    }

    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        #if canImport(Darwin)
        let rc = pthread_key_create(&key) { Unmanaged<Open>.fromOpaque($0).release() }
        #else
        let rc = pthread_key_create(&key) { if let p = $0 { Unmanaged<Open>.fromOpaque(p).release() } }
        #endif
        precondition(rc == 0, "pthread_key_create failed: \(rc)")
        return key
    }()

    private static var current: Open {
        if let p = pthread_getspecific(key) { return Unmanaged<Open>.fromOpaque(p).takeUnretainedValue() }
        let open = Open()
        pthread_setspecific(key, Unmanaged.passRetained(open).toOpaque())
        return open
    }

    static func enter(_ environment: UInt) { current.handles.append(environment) }

    static func leave(_ environment: UInt) {
        let open = current
        if let i = open.handles.lastIndex(of: environment) { open.handles.remove(at: i) }
    }

    static func contains(_ environment: UInt) -> Bool {
        guard let p = pthread_getspecific(key) else { return false }
        return Unmanaged<Open>.fromOpaque(p).takeUnretainedValue().handles.contains(environment)
    }
}
