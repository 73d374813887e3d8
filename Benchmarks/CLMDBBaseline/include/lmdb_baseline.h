#ifndef LMDB_BASELINE_H
#define LMDB_BASELINE_H
#include <stddef.h>
#include <stdint.h>

/// One LWW op: key index, 16-byte big-endian HLC, value bytes shared by all ops.
typedef struct {
    uint32_t key;
    uint8_t hlc[16];
} tg_baseline_op;

/// Raw LMDB read-compare-write loop: for each op, mdb_get the key, compare the first
/// 16 value bytes (the HLC) and put [hlc | value] when newer. `batch` ops per
/// transaction, MDB_NOSYNC unless `durable`. With `oplog`, every applied op is also
/// appended (MDB_APPEND) to a second database keyed by a sequence number.
/// Returns the number of applied ops, or -1 on error (message in `error`, 256 bytes).
long tg_lmdb_rcw(const char *dir, const tg_baseline_op *ops, size_t count, const uint8_t *value,
                 size_t value_len, size_t batch, int durable, int oplog, char *error);

/// Reads the stored HLC of keys 0..<keys into `hlcs` (16 bytes each, zero when
/// absent); 0 on success.
int tg_lmdb_read_all(const char *dir, uint32_t keys, uint8_t *hlcs);
#endif
