#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Checks an LMDB data file from its bytes, without liblmdb, so a damaged file is
/// reported before liblmdb reads it (liblmdb trusts page numbers and offsets: on a
/// damaged file it can read outside the map or fail an assertion and abort).
///
/// Reads with `pread` only (a file shorter than it claims is an error, never a bus
/// error). Checks both meta pages (magic, version, page size, transaction ids), the
/// file size against the last page in use, and with `full` every page reachable from
/// the chosen meta: the free-page tree, the main tree and every named database in it —
/// page numbers, page types and depth, node offsets and sizes, key sizes, overflow
/// chains, free-list entries — each page visited once. The layout is LMDB 0.9's
/// (`mdb.c`: `MDB_page`, `MDB_meta`, `MDB_db`, `MDB_node`), native byte order.
public enum FileVerifier {
    /// The outcome of a verification.
    public struct Report: Sendable {
        public var problems: [String] = []
        /// Pages in use according to the chosen meta page.
        public var pages = 0
        /// Pages visited by the walk (0 without `full`).
        public var pagesVisited = 0
        public var fileBytes = 0
        public var seconds = 0.0
        /// False when the file kept changing under the walk (a writer is busy) and the
        /// walk was given up; `problems` is then empty.
        public var completed = true
        public var isIntact: Bool { problems.isEmpty }
    }

    static let pageHeader = 16
    static let nodeHeader = 8
    static let branch: UInt16 = 0x01
    static let leaf: UInt16 = 0x02
    static let overflow: UInt16 = 0x04
    static let meta: UInt16 = 0x08
    static let bigData: UInt16 = 0x01
    static let subData: UInt16 = 0x02
    static let dupData: UInt16 = 0x04
    static let invalidPage = UInt64.max

    struct DB {
        var depth: UInt16
        var entries: UInt64
        var root: UInt64
        var flags: UInt16
    }

    struct Meta {
        var pageSize: Int
        var txnid: UInt64
        var lastPage: UInt64
        var free: DB
        var main: DB
    }

    /// Verifies the data file at `path` (`DIR/data.mdb`).
    public static func verify(dataFile path: String, full: Bool) -> Report {
        let started = monotonicSeconds()
        var report = Report()
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else {
            report.problems.append("cannot open \(path): \(String(cString: strerror(errno)))")
            return report
        }
        defer { close(fd) }
        // A writer may commit while the walk runs: walk again when the metas moved.
        for _ in 0..<5 {
            var attempt = Report()
            let before = verifyOnce(fd, full: full, into: &attempt)
            let after = readMetas(fd).map { (($0.0?.txnid) ?? 0) &+ (($0.1?.txnid) ?? 0) }
            if attempt.isIntact || before == after {
                attempt.seconds = monotonicSeconds() - started
                return attempt
            }
        }
        report.completed = false
        report.seconds = monotonicSeconds() - started
        return report
    }

    /// One pass; returns the sum of the meta transaction ids it saw (to detect change).
    static func verifyOnce(_ fd: Int32, full: Bool, into report: inout Report) -> UInt64? {
        // The metas before the size: a writer writes a commit's pages before its meta,
        // so the file is at least as long as the metas read first say (the other order
        // can see a new meta and the old size, and call a healthy file short).
        let metas = readMetas(fd)
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            report.problems.append("stat: \(String(cString: strerror(errno)))")
            return nil
        }
        report.fileBytes = Int(st.st_size)
        guard st.st_size > 0 else {
            report.problems.append("the data file is empty (truncated to 0 bytes)")
            return nil
        }
        guard let (m0, m1) = metas else {
            report.problems.append("the data file is shorter than its two meta pages")
            return nil
        }
        let stamp = (m0?.txnid ?? 0) &+ (m1?.txnid ?? 0)
        if m0 == nil { report.problems.append("meta page 0 is damaged") }
        if m1 == nil { report.problems.append("meta page 1 is damaged") }
        guard let chosen = [m0, m1].compactMap({ $0 }).max(by: { $0.txnid < $1.txnid }) else { return stamp }
        if let m0, let m1 {
            if m0.pageSize != m1.pageSize { report.problems.append("meta pages disagree on the page size") }
            let gap = m0.txnid > m1.txnid ? m0.txnid - m1.txnid : m1.txnid - m0.txnid
            if gap != 1 && !(m0.txnid == 0 && m1.txnid == 0) {
                report.problems.append("meta pages hold transactions \(m0.txnid) and \(m1.txnid): one of them is damaged")
            }
        }
        let psize = chosen.pageSize
        report.pages = Int(clamping: chosen.lastPage &+ 1)
        let needed = (chosen.lastPage &+ 1).multipliedReportingOverflow(by: UInt64(psize))
        if needed.overflow || needed.partialValue > UInt64(st.st_size) {
            report.problems.append("the data file has \(st.st_size) bytes; its meta page uses \(chosen.lastPage &+ 1) pages of \(psize)")
            return stamp
        }
        // Flags choose comparators and node layouts: the free tree has integer keys
        // (plus persistent environment flags this wrapper never sets), every other
        // tree plain sorted keys without duplicates.
        if chosen.free.flags & ~0x08 != 0 || chosen.free.flags & 0x08 == 0 {
            report.problems.append("meta page: free-page tree flags 0x\(String(chosen.free.flags, radix: 16))")
        }
        if chosen.main.flags != 0 { report.problems.append("meta page: main tree flags 0x\(String(chosen.main.flags, radix: 16))") }
        guard full, report.problems.isEmpty else { return stamp }
        var walker = Walker(fd: fd, pageSize: psize, lastPage: chosen.lastPage)
        walker.walk(chosen.free, name: "free-page tree", isFreeList: true)
        walker.walk(chosen.main, name: "main tree", isMain: true)
        for freed in walker.freedPages where walker.isVisited(freed) {
            walker.problems.append("free list names page \(freed), which is in use")
            break
        }
        report.problems += walker.problems.prefix(20)
        if walker.problems.count > 20 { report.problems.append("… \(walker.problems.count - 20) more") }
        report.pagesVisited = walker.visitedCount
        return stamp
    }

    /// Both meta pages (nil for a damaged one), or nil when the file is too short.
    static func readMetas(_ fd: Int32) -> (Meta?, Meta?)? {
        var first = [UInt8](repeating: 0, count: 152)
        guard pread(fd, &first, 152, 0) == 152 else { return nil }
        let m0 = parseMeta(first, pageNumber: 0)
        // The page size comes from a valid meta; try the common sizes otherwise.
        let sizes = m0.map { [$0.pageSize] } ?? [4096, 8192, 16384, 65536, 2048, 1024, 512]
        var m1: Meta?
        var readable = false
        for size in sizes {
            var second = [UInt8](repeating: 0, count: 152)
            guard pread(fd, &second, 152, off_t(size)) == 152 else { continue }
            readable = true
            if let m = parseMeta(second, pageNumber: 1), m.pageSize == size {
                m1 = m
                break
            }
        }
        guard readable || m0 != nil else { return nil }
        return (m0, m1)
    }

    static func parseMeta(_ b: [UInt8], pageNumber: UInt64) -> Meta? {
        guard u64(b, 0) == pageNumber, u16(b, 10) & meta != 0, u32(b, 16) == 0xBEEF_C0DE, u32(b, 20) == 1 else { return nil }
        let psize = Int(u32(b, 40))
        guard psize >= 512, psize <= 65536, psize & (psize - 1) == 0 else { return nil }
        func db(_ at: Int) -> DB { DB(depth: u16(b, at + 6), entries: u64(b, at + 32), root: u64(b, at + 40), flags: u16(b, at + 4)) }
        let lastPage = u64(b, 136)
        guard lastPage >= 1 else { return nil }
        return Meta(pageSize: psize, txnid: u64(b, 144), lastPage: lastPage, free: db(40), main: db(88))
    }

    /// Walks B-trees page by page with every reference bounds-checked.
    struct Walker {
        let fd: Int32
        let pageSize: Int
        let lastPage: UInt64
        var visited: [UInt64]
        var visitedCount = 0
        var problems: [String] = []
        /// Pages the free list names: none may be a page in use.
        var freedPages: [UInt64] = []
        var page: [UInt8]

        init(fd: Int32, pageSize: Int, lastPage: UInt64) {
            self.fd = fd
            self.pageSize = pageSize
            self.lastPage = lastPage
            self.visited = [UInt64](repeating: 0, count: Int(lastPage / 64) + 1)
            self.page = [UInt8](repeating: 0, count: pageSize)
        }

        /// Marks `pgno` visited; false when out of range or seen before.
        mutating func claim(_ pgno: UInt64, _ what: String) -> Bool {
            guard pgno >= 2, pgno <= lastPage else {
                problems.append("\(what): page \(pgno) is outside the file (pages 2...\(lastPage))")
                return false
            }
            let (word, bit) = (Int(pgno / 64), pgno % 64)
            if visited[word] & (1 << bit) != 0 {
                problems.append("\(what): page \(pgno) is referenced twice")
                return false
            }
            visited[word] |= 1 << bit
            visitedCount += 1
            return true
        }

        func isVisited(_ pgno: UInt64) -> Bool {
            pgno <= lastPage && visited[Int(pgno / 64)] & (1 << (pgno % 64)) != 0
        }

        mutating func read(_ pgno: UInt64) -> Bool {
            let n = page.withUnsafeMutableBytes { pread(fd, $0.baseAddress, pageSize, off_t(pgno) * off_t(pageSize)) }
            return n == pageSize
        }

        mutating func walk(_ db: DB, name: String, isFreeList: Bool = false, isMain: Bool = false) {
            guard db.root != FileVerifier.invalidPage else { return }
            guard db.depth >= 1, db.depth <= 32 else {
                problems.append("\(name): depth \(db.depth)")
                return
            }
            var entries: UInt64 = 0
            var subs: [(String, DB)] = []
            walkPage(db.root, level: Int(db.depth), name: name, isFreeList: isFreeList, isMain: isMain, entries: &entries, subs: &subs)
            if problems.isEmpty && entries != db.entries {
                problems.append("\(name): \(entries) entries found, the tree header says \(db.entries)")
            }
            for (subName, sub) in subs where problems.count < 100 {
                guard sub.flags == 0 else {
                    problems.append("database \"\(subName)\": flags 0x\(String(sub.flags, radix: 16))")
                    continue
                }
                walk(sub, name: "database \"\(subName)\"")
            }
        }

        /// Walks the subtree at `pgno`, whose keys must lie in `bounds` (from the
        /// parent's separators: at least the lower, below the upper) and be in
        /// strictly increasing byte order (liblmdb's default comparison, which every
        /// database of this file uses; the free list's integer keys are not checked).
        /// A changed key byte that breaks the order makes liblmdb's searches miss whole
        /// ranges, and its writes then spread the damage.
        mutating func walkPage(
            _ pgno: UInt64, level: Int, name: String, isFreeList: Bool, isMain: Bool, entries: inout UInt64, subs: inout [(String, DB)],
            bounds: (lower: [UInt8]?, upper: [UInt8]?) = (nil, nil)
        ) {
            guard problems.count < 100, claim(pgno, name) else { return }
            guard read(pgno) else {
                problems.append("\(name): page \(pgno) cannot be read")
                return
            }
            let p = page
            let flags = u16(p, 10)
            guard u64(p, 0) == pgno else {
                problems.append("\(name): page \(pgno) says it is page \(u64(p, 0))")
                return
            }
            let isLeaf = level == 1
            // Exactly the type bit: a stored page never carries P_DIRTY or another type
            // (liblmdb would write into a "dirty" page in place, in a read-only map).
            guard flags == (isLeaf ? leaf : branch) else {
                problems.append("\(name): page \(pgno) has flags 0x\(String(flags, radix: 16)), expected a \(isLeaf ? "leaf" : "branch") page")
                return
            }
            let lower = Int(u16(p, 12))
            let upper = Int(u16(p, 14))
            guard lower >= pageHeader, lower <= upper, upper <= pageSize, (lower - pageHeader) % 2 == 0 else {
                problems.append("\(name): page \(pgno) has free-space bounds \(lower)...\(upper)")
                return
            }
            let count = (lower - pageHeader) / 2
            if count == 0 && !(isLeaf && level == 1 && entries == 0) {
                problems.append("\(name): page \(pgno) is empty")
                return
            }
            // liblmdb asserts that a branch page outside the free tree holds two keys.
            if !isLeaf && !isFreeList && count < 2 {
                problems.append("\(name): branch page \(pgno) holds \(count) key")
                return
            }
            var children: [UInt64] = []
            var separators: [[UInt8]?] = []
            var previous: Range<Int>?
            // Where each node's bytes lie: two that overlap mean a damaged size field,
            // and liblmdb writing into such a page overwrites its neighbours.
            var spans: [Range<Int>] = []
            for i in 0..<count {
                let offset = Int(u16(p, pageHeader + 2 * i))
                guard offset >= upper, offset + nodeHeader <= pageSize else {
                    problems.append("\(name): page \(pgno) node \(i) at offset \(offset) is outside the node area")
                    return
                }
                let keySize = Int(u16(p, offset + 6))
                let nodeFlags = u16(p, offset + 4)
                guard keySize <= 511, offset + nodeHeader + keySize <= pageSize else {
                    problems.append("\(name): page \(pgno) node \(i) has a key of \(keySize) bytes")
                    return
                }
                // A branch page's first key is implicit (below every other).
                if !isFreeList && (isLeaf || i > 0) {
                    let keyRange = (offset + nodeHeader)..<(offset + nodeHeader + keySize)
                    let key = p[keyRange]
                    let inOrder = previous.map { p[$0].lexicographicallyPrecedes(key) } ?? true
                    let aboveLower = bounds.lower.map { !key.lexicographicallyPrecedes($0) } ?? true
                    let belowUpper = bounds.upper.map { key.lexicographicallyPrecedes($0) } ?? true
                    guard inOrder, aboveLower, belowUpper else {
                        problems.append("\(name): page \(pgno) node \(i) has a key out of order (a damaged key)")
                        return
                    }
                    previous = keyRange
                }
                if !isLeaf {
                    spans.append(offset..<(offset + nodeHeader + keySize))
                    let child = UInt64(u16(p, offset)) | UInt64(u16(p, offset + 2)) << 16 | UInt64(nodeFlags) << 32
                    children.append(child)
                    separators.append(i == 0 ? nil : Array(p[(offset + nodeHeader)..<(offset + nodeHeader + keySize)]))
                    continue
                }
                entries += 1
                let dataSize = Int(u16(p, offset)) | Int(u16(p, offset + 2)) << 16
                let dataAt = offset + nodeHeader + keySize
                spans.append(offset..<(dataAt + (nodeFlags & bigData != 0 ? 8 : min(dataSize, pageSize))))
                if isFreeList && keySize != 8 {
                    problems.append("\(name): page \(pgno) node \(i) has a \(keySize)-byte key, not a transaction id")
                    return
                }
                if nodeFlags & bigData != 0 {
                    guard !isMain, nodeFlags & subData == 0 else {
                        problems.append("\(name): page \(pgno) node \(i) puts a database record in overflow pages")
                        return
                    }
                    guard dataAt + 8 <= pageSize else {
                        problems.append("\(name): page \(pgno) node \(i) overflow reference is cut off")
                        return
                    }
                    checkOverflow(u64(p, dataAt), size: dataSize, name: name)
                    continue
                }
                guard dataAt + dataSize <= pageSize else {
                    problems.append("\(name): page \(pgno) node \(i) holds \(dataSize) bytes past the page end")
                    return
                }
                if nodeFlags & dupData != 0 {
                    problems.append("\(name): page \(pgno) node \(i) has duplicate data (not used by this file)")
                    return
                }
                if nodeFlags & subData != 0 {
                    guard isMain, dataSize == 48 else {
                        problems.append("\(name): page \(pgno) node \(i) claims a named database")
                        return
                    }
                    let keyBytes = Array(p[(offset + nodeHeader)..<(offset + nodeHeader + keySize)])
                    let sub = DB(
                        depth: u16(p, dataAt + 6), entries: u64(p, dataAt + 32), root: u64(p, dataAt + 40), flags: u16(p, dataAt + 4))
                    subs.append((String(decoding: keyBytes, as: UTF8.self), sub))
                } else if isFreeList {
                    checkFreeList(p, at: dataAt, size: dataSize, name: name, page: pgno)
                }
            }
            let ordered = spans.sorted { $0.lowerBound < $1.lowerBound }
            for (a, b) in zip(ordered, ordered.dropFirst()) where a.upperBound > b.lowerBound {
                problems.append("\(name): page \(pgno) has nodes that overlap (a damaged size)")
                return
            }
            for (j, child) in children.enumerated() where problems.count < 100 {
                let childBounds = (
                    lower: j == 0 ? bounds.lower : separators[j], upper: j + 1 < separators.count ? separators[j + 1] : bounds.upper
                )
                walkPage(
                    child, level: level - 1, name: name, isFreeList: isFreeList, isMain: isMain, entries: &entries, subs: &subs,
                    bounds: isFreeList ? (nil, nil) : childBounds)
            }
        }

        mutating func checkOverflow(_ pgno: UInt64, size: Int, name: String) {
            guard claim(pgno, name) else { return }
            guard read(pgno) else {
                problems.append("\(name): overflow page \(pgno) cannot be read")
                return
            }
            let pages = UInt64(u32(page, 12))
            guard u64(page, 0) == pgno, u16(page, 10) == overflow, pages >= 1,
                pgno &+ pages &- 1 <= lastPage, Int(pages) * pageSize - pageHeader >= size
            else {
                problems.append("\(name): overflow page \(pgno) (\(pages) pages) does not hold \(size) bytes")
                return
            }
            for extra in 1..<pages where problems.count < 100 { _ = claim(pgno + extra, name) }
        }

        mutating func checkFreeList(_ p: [UInt8], at: Int, size: Int, name: String, page pgno: UInt64) {
            guard size >= 8, size % 8 == 0 else {
                problems.append("\(name): page \(pgno) free-list entry of \(size) bytes")
                return
            }
            let count = u64(p, at)
            guard count == UInt64(size / 8 - 1) else {
                problems.append("\(name): page \(pgno) free-list entry counts \(count) pages in \(size) bytes")
                return
            }
            var previous = UInt64.max
            for i in 0..<Int(count) {
                let freed = u64(p, at + 8 + 8 * i)
                if freed < 2 || freed > lastPage {
                    problems.append("\(name): free list names page \(freed), outside the file")
                    return
                }
                // liblmdb keeps each list sorted, descending, without repeats.
                if freed >= previous {
                    problems.append("\(name): free list on page \(pgno) is not in descending order")
                    return
                }
                previous = freed
                freedPages.append(freed)
            }
        }
    }

    @inline(__always) static func u16(_ b: [UInt8], _ at: Int) -> UInt16 {
        at + 2 <= b.count ? b.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: at, as: UInt16.self) } : 0
    }
    @inline(__always) static func u32(_ b: [UInt8], _ at: Int) -> UInt32 {
        at + 4 <= b.count ? b.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: at, as: UInt32.self) } : 0
    }
    @inline(__always) static func u64(_ b: [UInt8], _ at: Int) -> UInt64 {
        at + 8 <= b.count ? b.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: at, as: UInt64.self) } : 0
    }

    static func monotonicSeconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}
