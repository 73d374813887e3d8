#ifndef TOPGUN_BASELINES_H
#define TOPGUN_BASELINES_H
#include <stddef.h>
#include <stdint.h>

/// Settings and outputs shared by every baseline run.
typedef struct {
    const char *dir;        ///< empty directory for this run's files
    int durable;            ///< fsync every batch (else leave flushing to the OS)
    int writemap;           ///< LMDB only: MDB_WRITEMAP
    size_t batch;           ///< ops per transaction / write batch
    double *batch_seconds;  ///< out: one entry per batch (may be NULL)
    char error[256];        ///< out: message when a function returns -1
} tg_run;

/// An LWW op: key index and the 16-byte big-endian HLC; every op writes the same value.
typedef struct {
    uint32_t key;
    uint8_t hlc[16];
} tg_lww_op;

/// A PN-counter op: the new running totals of one node (0..7) for one key.
typedef struct {
    uint32_t key;
    uint32_t node;
    uint64_t p, n;
} tg_counter_op;

/// An OR-set op on one key: add the tag (with an 8-byte value) or tombstone it.
typedef struct {
    uint32_t key;
    uint8_t tag[16];
    uint32_t remove;
    uint64_t value;
} tg_orset_op;

/// Per-key final state summaries, used to check that every system did the same work.
typedef struct {
    uint64_t live;    ///< live entries (OR-set) or keys (LWW)
    uint64_t digest;  ///< order-independent digest of the final state
} tg_summary;

uint64_t tg_mix(uint64_t h, uint64_t v);

/// Raw LMDB read-merge-write loops (with `oplog`: also MDB_APPEND each applied op).
long tg_lmdb_lww(tg_run *run, const tg_lww_op *ops, size_t count, const uint8_t *value, size_t len, int oplog);
/// LWW with a by-sequence change index: one log entry per record, the older one deleted.
long tg_lmdb_lww_byseq(tg_run *run, const tg_lww_op *ops, size_t count, const uint8_t *value, size_t len);
long tg_lmdb_counter(tg_run *run, const tg_counter_op *ops, size_t count, int oplog);
long tg_lmdb_orset(tg_run *run, const tg_orset_op *ops, size_t count, int oplog);
/// Summaries: LWW digest over (key, hlc); counters over (key, value); OR-set over live (key, tag).
int tg_lmdb_summary(const char *dir, int kind, uint32_t keys, tg_summary *out, char *error);

/// SQLite (WAL) UPSERT with an HLC guard, one transaction per batch.
long tg_sqlite_lww(tg_run *run, const tg_lww_op *ops, size_t count, const uint8_t *value, size_t len);
long tg_sqlite_counter(tg_run *run, const tg_counter_op *ops, size_t count);
long tg_sqlite_orset(tg_run *run, const tg_orset_op *ops, size_t count);
int tg_sqlite_summary(const char *dir, int kind, uint32_t keys, tg_summary *out, char *error);

/// RocksDB write batches with a merge operator doing the same choice; the run ends by
/// reading every key back so deferred merges are paid for.
long tg_rocksdb_lww(tg_run *run, const tg_lww_op *ops, size_t count, const uint8_t *value, size_t len, uint32_t keys);
long tg_rocksdb_counter(tg_run *run, const tg_counter_op *ops, size_t count, uint32_t keys);
long tg_rocksdb_orset(tg_run *run, const tg_orset_op *ops, size_t count, uint32_t keys);
int tg_rocksdb_summary(const char *dir, int kind, uint32_t keys, tg_summary *out, char *error);

enum { TG_KIND_LWW = 0, TG_KIND_COUNTER = 1, TG_KIND_ORSET = 2 };

/// Monotonic seconds.
double tg_now(void);
#endif
