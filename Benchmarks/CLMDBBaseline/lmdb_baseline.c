#include "lmdb_baseline.h"
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(x, what) do { int rc_ = (x); if (rc_) { snprintf(error, 256, "%s: %s", what, mdb_strerror(rc_)); goto fail; } } while (0)

static void key_bytes(uint32_t key, char *out, size_t *len) {
    *len = (size_t)snprintf(out, 32, "key-%u", key);
}

long tg_lmdb_rcw(const char *dir, const tg_baseline_op *ops, size_t count, const uint8_t *value,
                 size_t value_len, size_t batch, int durable, int oplog, char *error) {
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi dbi, log;
    long applied = 0;
    uint64_t seq = 0;
    uint8_t *record = malloc(16 + value_len);
    CHECK(mdb_env_create(&env), "create");
    CHECK(mdb_env_set_mapsize(env, (size_t)8 << 30), "mapsize");
    CHECK(mdb_env_set_maxdbs(env, 4), "maxdbs");
    CHECK(mdb_env_open(env, dir, MDB_NOTLS | (durable ? 0 : MDB_NOSYNC), 0644), "open");
    for (size_t start = 0; start < count; start += batch) {
        size_t end = start + batch < count ? start + batch : count;
        CHECK(mdb_txn_begin(env, NULL, 0, &txn), "begin");
        CHECK(mdb_dbi_open(txn, "records", MDB_CREATE, &dbi), "dbi");
        if (oplog) CHECK(mdb_dbi_open(txn, "oplog", MDB_CREATE, &log), "dbi log");
        for (size_t i = start; i < end; i++) {
            char kb[32];
            size_t klen;
            key_bytes(ops[i].key, kb, &klen);
            MDB_val k = {klen, kb}, v;
            int rc = mdb_get(txn, dbi, &k, &v);
            if (rc == 0 && v.mv_size >= 16 && memcmp(ops[i].hlc, v.mv_data, 16) <= 0) continue;
            if (rc != 0 && rc != MDB_NOTFOUND) CHECK(rc, "get");
            memcpy(record, ops[i].hlc, 16);
            memcpy(record + 16, value, value_len);
            MDB_val nv = {16 + value_len, record};
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

int tg_lmdb_read_all(const char *dir, uint32_t keys, uint8_t *hlcs) {
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    int rc;
    memset(hlcs, 0, (size_t)keys * 16);
    if ((rc = mdb_env_create(&env))) return rc;
    mdb_env_set_maxdbs(env, 4);
    mdb_env_set_mapsize(env, (size_t)8 << 30);
    if ((rc = mdb_env_open(env, dir, MDB_NOTLS | MDB_RDONLY, 0644))) { mdb_env_close(env); return rc; }
    if ((rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn))) { mdb_env_close(env); return rc; }
    if ((rc = mdb_dbi_open(txn, "records", 0, &dbi)) == 0) {
        for (uint32_t key = 0; key < keys; key++) {
            char kb[32];
            size_t klen;
            key_bytes(key, kb, &klen);
            MDB_val k = {klen, kb}, v;
            if (mdb_get(txn, dbi, &k, &v) == 0 && v.mv_size >= 16) memcpy(hlcs + (size_t)key * 16, v.mv_data, 16);
        }
    }
    mdb_txn_abort(txn);
    mdb_env_close(env);
    return rc;
}
