import Foundation

/// An output file that appears whole or not at all: written to a temporary file in
/// the same directory, flushed to disk, then renamed over the destination. Nothing but
/// a regular file (or nothing) at the destination is replaced.
enum AtomicFile {
    static func write(_ path: String, _ body: (FileHandle) throws -> Void) throws {
        if let type = try? FileManager.default.attributesOfItem(atPath: path)[.type] as? FileAttributeType, type != .typeRegular {
            throw CLIError("\(path) exists and is not a regular file; not replacing it")
        }
        let directory = (path as NSString).deletingLastPathComponent
        let temporary = (directory.isEmpty ? "." : directory) + "/.\((path as NSString).lastPathComponent).\(getpid()).tmp"
        guard FileManager.default.createFile(atPath: temporary, contents: nil), let out = FileHandle(forWritingAtPath: temporary) else {
            throw CLIError("cannot write \(path): \(String(cString: strerror(errno)))")
        }
        do {
            try body(out)
            try out.synchronize()
            try out.close()
            guard rename(temporary, path) == 0 else { throw CLIError("cannot write \(path): \(String(cString: strerror(errno)))") }
        } catch {
            try? out.close()
            unlink(temporary)
            if let error = error as? CLIError { throw error }
            let ns = error as NSError
            // What the body read can fail too (a damaged record): say that, not "write".
            guard ns.domain == NSCocoaErrorDomain || ns.domain == NSPOSIXErrorDomain else {
                throw CLIError("\(error); nothing was written to \(path)")
            }
            let reason = ns.code == Int(ENOSPC) ? "the disk is full" : error.localizedDescription
            throw CLIError("cannot write \(path): \(reason); nothing was written")
        }
    }
}
