import LMDB

extension Store {
    /// `Environment.read` with LMDB's errors reported as `StoreError`.
    func read<R>(_ body: (borrowing ReadTransaction) throws -> R) throws -> R {
        do {
            return try env.read(body)
        } catch let error as LMDBError {
            throw storeError(error, "read")
        }
    }

    /// `Environment.write` with LMDB's errors reported as `StoreError`; nothing of the
    /// transaction is applied when it throws.
    func write<R>(_ body: (borrowing WriteTransaction) throws -> R) throws -> R {
        do {
            return try env.write(body)
        } catch let error as LMDBError {
            throw storeError(error, "write aborted, nothing applied")
        }
    }

    /// The one mapping of LMDB errors to store errors.
    func storeError(_ error: LMDBError, _ operation: String) -> StoreError {
        switch error.code {
        case .closed:
            return StoreError(.closed, "\(operation): the store is closed", underlying: error)
        case .mapFull, .noSpace:
            return StoreError(.full, "\(operation): the disk is full", underlying: error)
        case .ioError where env.fileSystemIsFull:
            // liblmdb reports a short write of a full disk as EIO.
            return StoreError(.full, "\(operation): the disk is full", underlying: error)
        default:
            return StoreError(.storage, "\(operation): \(error.message)", underlying: error)
        }
    }

    /// Closes the store: transactions in flight finish first; every later read or
    /// write throws `StoreError(.closed)`; change streams end. The directory can be
    /// opened again at once. Closing twice does nothing.
    public func close() {
        env.close()
        feed.finish()
    }
}
