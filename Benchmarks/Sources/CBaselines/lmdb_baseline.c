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

long tg_lmdb_lww(tg_run *run, const tg_lww_op *ops, size_t count, const uint8_t *value, size_t len, int oplog) {
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi dbi, log = 0;
    long applied = 0;
    uint64_t seq = 0;
    uint8_t *record = malloc(16 + len);
    if (open_env(run, &env)) goto fail;
    for (size_t start = 0, b = 0; start < count; start += run->batch, b++) {
        double t0 = tg_now();
        size_t end = start + run->batch < count ? start + run->batch : count;
        CHECK(mdb_txn_begin(env, NULL, 0, &txn), "begin");
        CHECK(mdb_dbi_open(txn, "records", MDB_CREATE, &dbi), "dbi");
        if (oplog) CHECK(mdb_dbi_open(txn, "oplog", MDB_CREATE, &log), "dbi");
        for (size_t i = start; i < end; i++) {
            char kb[32];
            MDB_val k = {key_text(ops[i].key, kb), kb}, v;
            int rc = mdb_get(txn, dbi, &k, &v);
            if (rc == 0 && v.mv_size >= 16 && memcmp(ops[i].hlc, v.mv_data, 16) <= 0) continue;
            if (rc != 0 && rc != MDB_NOTFOUND) FAIL("get", rc);
            memcpy(record, ops[i].hlc, 16);
            memcpy(record + 16, value, len);
            MDB_val nv = {16 + len, record};
            CHECK(mdb_put(txn, dbi, &k, &nv, 0), "put");
            if (oplog) {
                uint64_t be = __builtin_bswap64(++seq);
                MDB_val lk = {8, &be};
                CHECK(mdb_put(txn, log, &lk, &nv, MDB_APPEND), "append");
            }
            applied++;
        }
        CHECK(mdb_txn_commit(txn), "commit");
        txn = NULL;
        if (run->batch_seconds) run->batch_seconds[b] = tg_now() - t0;
    }
    free(record);
    mdb_env_close(env);
    return applied;
fail:
    if (txn) mdb_txn_abort(txn);
    if (env) mdb_env_close(env);
    free(record);
    return -1;
}

long tg_lmdb_counter(tg_run *run, const tg_counter_op *ops, size_t count, int oplog) {
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
        if (oplog) CHECK(mdb_dbi_open(txn, "oplog", MDB_CREATE, &log), "dbi");
        for (size_t i = start; i < end; i++) {
            char kb[32];
            MDB_val k = {key_text(ops[i].key, kb), kb}, v;
            uint64_t totals[16] = {0};
            int rc = mdb_get(txn, dbi, &k, &v);
            if (rc == 0 && v.mv_size == sizeof totals) memcpy(totals, v.mv_data, sizeof totals);
            else if (rc != MDB_NOTFOUND && rc != 0) FAIL("get", rc);
            uint32_t n = ops[i].node & 7;
            if (ops[i].p <= totals[2 * n] && ops[i].n <= totals[2 * n + 1]) continue;
            if (ops[i].p > totals[2 * n]) totals[2 * n] = ops[i].p;
            if (ops[i].n > totals[2 * n + 1]) totals[2 * n + 1] = ops[i].n;
            MDB_val nv = {sizeof totals, totals};
            CHECK(mdb_put(txn, dbi, &k, &nv, 0), "put");
            if (oplog) {
                uint64_t be = __builtin_bswap64(++seq);
                MDB_val lk = {8, &be}, lv = {sizeof ops[i], (void *)&ops[i]};
                CHECK(mdb_put(txn, log, &lk, &lv, MDB_APPEND), "append");
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

/// OR-set as key "key-N" + 16-byte tag -> 'A' + value, or 'R' once removed.
long tg_lmdb_orset(tg_run *run, const tg_orset_op *ops, size_t count, int oplog) {
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
        if (oplog) CHECK(mdb_dbi_open(txn, "oplog", MDB_CREATE, &log), "dbi");
        for (size_t i = start; i < end; i++) {
            char kb[64];
            size_t kl = key_text(ops[i].key, kb);
            kb[kl] = '/';
            memcpy(kb + kl + 1, ops[i].tag, 16);
            MDB_val k = {kl + 17, kb}, v;
            int rc = mdb_get(txn, dbi, &k, &v);
            if (rc != 0 && rc != MDB_NOTFOUND) FAIL("get", rc);
            uint8_t entry[9];
            if (ops[i].remove) {
                if (rc == 0 && ((uint8_t *)v.mv_data)[0] == 'R') continue;
                entry[0] = 'R';
                MDB_val nv = {1, entry};
                CHECK(mdb_put(txn, dbi, &k, &nv, 0), "put");
            } else {
                if (rc == 0) continue;
                entry[0] = 'A';
                memcpy(entry + 1, &ops[i].value, 8);
                MDB_val nv = {9, entry};
                CHECK(mdb_put(txn, dbi, &k, &nv, 0), "put");
            }
            if (oplog) {
                uint64_t be = __builtin_bswap64(++seq);
                MDB_val lk = {8, &be}, lv = {sizeof ops[i], (void *)&ops[i]};
                CHECK(mdb_put(txn, log, &lk, &lv, MDB_APPEND), "append");
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
