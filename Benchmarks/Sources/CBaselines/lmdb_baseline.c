#include "baselines.h"
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAIL(what, rc) do { snprintf(run->error, sizeof run->error, "lmdb %s: %s", what, mdb_strerror(rc)); goto fail; } while (0)
#define CHECK(x, what) do { int rc_ = (x); if (rc_) FAIL(what, rc_); } while (0)

static size_t key_text(uint32_t key, char *out) { return (size_t)snprintf(out, 32, "key-%u", key); }

static int open_env(tg_run *run, MDB_env **env) {
    int rc = mdb_env_create(env);
    if (!rc) rc = mdb_env_set_mapsize(*env, (size_t)16 << 30);
    if (!rc) rc = mdb_env_set_maxdbs(*env, 4);
    if (!rc) rc = mdb_env_open(*env, run->dir, MDB_NOTLS | (run->durable ? 0 : MDB_NOSYNC) | (run->writemap ? MDB_WRITEMAP : 0), 0644);
    if (rc) snprintf(run->error, sizeof run->error, "lmdb open: %s", mdb_strerror(rc));
    return rc;
}

/// One op of a loop: merges op `i` into `dbi`; sets `*applied` and, when applied, the
/// bytes to append to the op log in `*logged`. Returns an LMDB code (0 = fine).
typedef int (*step_fn)(MDB_txn *txn, MDB_dbi dbi, size_t i, void *ctx, int *applied, MDB_val *logged);

/// The loop shared by every LMDB baseline: `run->batch` ops per transaction, each op
/// merged by `step`, applied ops appended to an op log (MDB_APPEND) when `oplog`. With
/// `log_dbi`, the op log is opened for a step that keeps it itself.
static long run_loop(tg_run *run, size_t count, int oplog, step_fn step, void *ctx, MDB_dbi *log_dbi) {
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi dbi, log = 0;
    long applied = 0;
    uint64_t seq = 0;
    if (open_env(run, &env)) goto fail;
    for (size_t start = 0, b = 0; start < count; start += run->batch, b++) {
        double t0 = tg_now();
        size_t end = start + run->batch < count ? start + run->batch : count;
        CHECK(mdb_txn_begin(env, NULL, 0, &txn), "begin");
        CHECK(mdb_dbi_open(txn, "records", MDB_CREATE, &dbi), "dbi");
        if (oplog || log_dbi) CHECK(mdb_dbi_open(txn, "oplog", MDB_CREATE, &log), "dbi");
        if (log_dbi) *log_dbi = log;
        for (size_t i = start; i < end; i++) {
            int changed = 0;
            MDB_val logged = {0, NULL};
            CHECK(step(txn, dbi, i, ctx, &changed, &logged), "merge");
            if (!changed) continue;
            if (oplog) {
                uint64_t be = __builtin_bswap64(++seq);
                MDB_val lk = {8, &be};
                CHECK(mdb_put(txn, log, &lk, &logged, MDB_APPEND), "append");
            }
            applied++;
        }
        CHECK(mdb_txn_commit(txn), "commit");
        txn = NULL;
        if (run->batch_seconds) run->batch_seconds[b] = tg_now() - t0;
    }
    mdb_env_close(env);
    return applied;
fail:
    if (txn) mdb_txn_abort(txn);
    if (env) mdb_env_close(env);
    return -1;
}

typedef struct {
    const tg_lww_op *ops;
    const uint8_t *value;
    size_t len;
    uint8_t *record;
} lww_ctx;

/// LWW: compare the stored 16-byte HLC prefix, write `hlc | value` when newer.
static int lww_step(MDB_txn *txn, MDB_dbi dbi, size_t i, void *c, int *applied, MDB_val *logged) {
    lww_ctx *ctx = c;
    char kb[32];
    MDB_val k = {key_text(ctx->ops[i].key, kb), kb}, v;
    int rc = mdb_get(txn, dbi, &k, &v);
    if (rc == 0 && v.mv_size >= 16 && memcmp(ctx->ops[i].hlc, v.mv_data, 16) <= 0) return 0;
    if (rc != 0 && rc != MDB_NOTFOUND) return rc;
    memcpy(ctx->record, ctx->ops[i].hlc, 16);
    memcpy(ctx->record + 16, ctx->value, ctx->len);
    MDB_val nv = {16 + ctx->len, ctx->record};
    *logged = nv;
    *applied = 1;
    return mdb_put(txn, dbi, &k, &nv, 0);
}

long tg_lmdb_lww(tg_run *run, const tg_lww_op *ops, size_t count, const uint8_t *value, size_t len, int oplog) {
    lww_ctx ctx = {ops, value, len, malloc(16 + len)};
    long applied = run_loop(run, count, oplog, lww_step, &ctx, NULL);
    free(ctx.record);
    return applied;
}

typedef struct {
    const tg_lww_op *ops;
    const uint8_t *value;
    size_t len;
    uint8_t *record;
    MDB_dbi log;
    uint64_t seq;
} byseq_ctx;

/// LWW with the op log as a by-sequence change index (CouchDB's by_seq): a record holds
/// `hlc | seq | value`, the log maps seq → record key, and a write deletes the record's
/// previous log entry in the same transaction, so the log holds one entry per record.
static int byseq_step(MDB_txn *txn, MDB_dbi dbi, size_t i, void *c, int *applied, MDB_val *logged) {
    byseq_ctx *ctx = c;
    (void)logged;
    char kb[32];
    MDB_val k = {key_text(ctx->ops[i].key, kb), kb}, v;
    int rc = mdb_get(txn, dbi, &k, &v);
    if (rc == 0 && v.mv_size >= 24 && memcmp(ctx->ops[i].hlc, v.mv_data, 16) <= 0) return 0;
    if (rc != 0 && rc != MDB_NOTFOUND) return rc;
    if (rc == 0) {
        uint64_t old;
        memcpy(&old, (char *)v.mv_data + 16, 8);
        MDB_val ok = {8, &old};
        if ((rc = mdb_del(txn, ctx->log, &ok, NULL))) return rc;
    }
    uint64_t be = __builtin_bswap64(++ctx->seq);
    memcpy(ctx->record, ctx->ops[i].hlc, 16);
    memcpy(ctx->record + 16, &be, 8);
    memcpy(ctx->record + 24, ctx->value, ctx->len);
    MDB_val nv = {24 + ctx->len, ctx->record};
    if ((rc = mdb_put(txn, dbi, &k, &nv, 0))) return rc;
    MDB_val lk = {8, &be};
    *applied = 1;
    return mdb_put(txn, ctx->log, &lk, &k, MDB_APPEND);
}

long tg_lmdb_lww_byseq(tg_run *run, const tg_lww_op *ops, size_t count, const uint8_t *value, size_t len) {
    byseq_ctx ctx = {ops, value, len, malloc(24 + len), 0, 0};
    long applied = run_loop(run, count, 0, byseq_step, &ctx, &ctx.log);
    free(ctx.record);
    return applied;
}

/// Counters: a value is 8 nodes × (p, n); merge takes the per-node maximum.
static int counter_step(MDB_txn *txn, MDB_dbi dbi, size_t i, void *c, int *applied, MDB_val *logged) {
    const tg_counter_op *op = (const tg_counter_op *)c + i;
    char kb[32];
    MDB_val k = {key_text(op->key, kb), kb}, v;
    uint64_t totals[16] = {0};
    int rc = mdb_get(txn, dbi, &k, &v);
    if (rc == 0 && v.mv_size == sizeof totals) memcpy(totals, v.mv_data, sizeof totals);
    else if (rc != MDB_NOTFOUND && rc != 0) return rc;
    uint32_t n = op->node & 7;
    if (op->p <= totals[2 * n] && op->n <= totals[2 * n + 1]) return 0;
    if (op->p > totals[2 * n]) totals[2 * n] = op->p;
    if (op->n > totals[2 * n + 1]) totals[2 * n + 1] = op->n;
    MDB_val nv = {sizeof totals, totals};
    logged->mv_size = sizeof *op;
    logged->mv_data = (void *)op;
    *applied = 1;
    return mdb_put(txn, dbi, &k, &nv, 0);
}

long tg_lmdb_counter(tg_run *run, const tg_counter_op *ops, size_t count, int oplog) {
    return run_loop(run, count, oplog, counter_step, (void *)ops, NULL);
}

/// OR-set as key "key-N" + 16-byte tag -> 'A' + value, or 'R' once removed.
static int orset_step(MDB_txn *txn, MDB_dbi dbi, size_t i, void *c, int *applied, MDB_val *logged) {
    const tg_orset_op *op = (const tg_orset_op *)c + i;
    char kb[64];
    size_t kl = key_text(op->key, kb);
    kb[kl] = '/';
    memcpy(kb + kl + 1, op->tag, 16);
    MDB_val k = {kl + 17, kb}, v;
    int rc = mdb_get(txn, dbi, &k, &v);
    if (rc != 0 && rc != MDB_NOTFOUND) return rc;
    uint8_t entry[9];
    MDB_val nv = {9, entry};
    if (op->remove) {
        if (rc == 0 && ((uint8_t *)v.mv_data)[0] == 'R') return 0;
        entry[0] = 'R';
        nv.mv_size = 1;
    } else {
        if (rc == 0) return 0;
        entry[0] = 'A';
        memcpy(entry + 1, &op->value, 8);
    }
    logged->mv_size = sizeof *op;
    logged->mv_data = (void *)op;
    *applied = 1;
    return mdb_put(txn, dbi, &k, &nv, 0);
}

long tg_lmdb_orset(tg_run *run, const tg_orset_op *ops, size_t count, int oplog) {
    return run_loop(run, count, oplog, orset_step, (void *)ops, NULL);
}

static uint32_t parse_key(const char *p, size_t n) {
    uint32_t k = 0;
    for (size_t i = 4; i < n && p[i] >= '0' && p[i] <= '9'; i++) k = k * 10 + (uint32_t)(p[i] - '0');
    return k;
}

int tg_lmdb_summary(const char *dir, int kind, uint32_t keys, tg_summary *out, char *error) {
    (void)keys;
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_cursor *cur;
    MDB_val k, v;
    out->live = 0;
    out->digest = 0;
    int rc = mdb_env_create(&env);
    if (!rc) rc = mdb_env_set_maxdbs(env, 4);
    if (!rc) rc = mdb_env_set_mapsize(env, (size_t)16 << 30);
    if (!rc) rc = mdb_env_open(env, dir, MDB_NOTLS | MDB_RDONLY, 0644);
    if (!rc) rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
    if (!rc) rc = mdb_dbi_open(txn, "records", 0, &dbi);
    if (!rc) rc = mdb_cursor_open(txn, dbi, &cur);
    if (rc) { snprintf(error, 256, "lmdb summary: %s", mdb_strerror(rc)); mdb_env_close(env); return -1; }
    while ((rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) == 0) {
        const char *kp = k.mv_data;
        if (kind == TG_KIND_LWW) {
            uint32_t key = parse_key(kp, k.mv_size);
            uint64_t hi, lo;
            memcpy(&hi, v.mv_data, 8);
            memcpy(&lo, (char *)v.mv_data + 8, 8);
            out->live++;
            out->digest ^= tg_mix(tg_mix(key, __builtin_bswap64(hi)), __builtin_bswap64(lo));
        } else if (kind == TG_KIND_COUNTER) {
            uint32_t key = parse_key(kp, k.mv_size);
            uint64_t t[16];
            memcpy(t, v.mv_data, sizeof t);
            int64_t value = 0;
            for (int i = 0; i < 8; i++) value += (int64_t)(t[2 * i] - t[2 * i + 1]);
            out->live++;
            out->digest ^= tg_mix(key, (uint64_t)value);
        } else {
            if (((uint8_t *)v.mv_data)[0] != 'A') continue;
            size_t slash = k.mv_size - 17;
            uint32_t key = parse_key(kp, slash);
            uint64_t hi, lo;
            memcpy(&hi, kp + slash + 1, 8);
            memcpy(&lo, kp + slash + 9, 8);
            out->live++;
            out->digest ^= tg_mix(tg_mix(key, __builtin_bswap64(hi)), __builtin_bswap64(lo));
        }
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    return 0;
}
