#include "baselines.h"
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#define SQL_FAIL(what) do { snprintf(run->error, sizeof run->error, "sqlite %s: %s", what, db ? sqlite3_errmsg(db) : "open"); goto fail; } while (0)

static sqlite3 *open_db(tg_run *run, const char *schema) {
    char path[1024];
    snprintf(path, sizeof path, "%s/bench.sqlite", run->dir);
    sqlite3 *db = NULL;
    if (sqlite3_open(path, &db) != SQLITE_OK) goto fail;
    char pragmas[256];
    snprintf(pragmas, sizeof pragmas, "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s; PRAGMA cache_size=-262144;",
             run->durable ? "FULL" : "OFF");
    if (sqlite3_exec(db, pragmas, NULL, NULL, NULL) != SQLITE_OK) goto fail;
    if (sqlite3_exec(db, schema, NULL, NULL, NULL) != SQLITE_OK) goto fail;
    return db;
fail:
    snprintf(run->error, sizeof run->error, "sqlite open: %s", db ? sqlite3_errmsg(db) : "out of memory");
    if (db) sqlite3_close(db);
    return NULL;
}

typedef int (*bind_fn)(sqlite3_stmt *stmt, const void *op, const void *ctx);

/// Runs `sql` once per op in transactions of `run->batch`; counts rows changed.
static long run_batches(tg_run *run, sqlite3 *db, const char *sql, const void *ops, size_t stride, size_t count,
                        bind_fn bind, const void *ctx) {
    sqlite3_stmt *stmt = NULL;
    long applied = 0;
    if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) != SQLITE_OK) SQL_FAIL("prepare");
    for (size_t start = 0, b = 0; start < count; start += run->batch, b++) {
        double t0 = tg_now();
        size_t end = start + run->batch < count ? start + run->batch : count;
        if (sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) SQL_FAIL("begin");
        for (size_t i = start; i < end; i++) {
            bind(stmt, (const char *)ops + i * stride, ctx);
            if (sqlite3_step(stmt) != SQLITE_DONE) SQL_FAIL("step");
            applied += sqlite3_changes(db);
            sqlite3_reset(stmt);
        }
        if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) SQL_FAIL("commit");
        if (run->batch_seconds) run->batch_seconds[b] = tg_now() - t0;
    }
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return applied;
fail:
    if (stmt) sqlite3_finalize(stmt);
    sqlite3_close(db);
    return -1;
}

typedef struct { const uint8_t *value; size_t len; } lww_ctx;

static int bind_lww(sqlite3_stmt *s, const void *o, const void *c) {
    const tg_lww_op *op = o;
    const lww_ctx *ctx = c;
    char kb[32];
    int n = snprintf(kb, sizeof kb, "key-%u", op->key);
    sqlite3_bind_text(s, 1, kb, n, SQLITE_TRANSIENT);
    sqlite3_bind_blob(s, 2, op->hlc, 16, SQLITE_STATIC);
    sqlite3_bind_blob(s, 3, ctx->value, (int)ctx->len, SQLITE_STATIC);
    return 0;
}

long tg_sqlite_lww(tg_run *run, const tg_lww_op *ops, size_t count, const uint8_t *value, size_t len) {
    sqlite3 *db = open_db(run, "CREATE TABLE kv(k TEXT PRIMARY KEY, hlc BLOB NOT NULL, v BLOB) WITHOUT ROWID;");
    if (!db) return -1;
    lww_ctx ctx = {value, len};
    return run_batches(run, db,
                       "INSERT INTO kv(k, hlc, v) VALUES (?1, ?2, ?3) ON CONFLICT(k) DO UPDATE "
                       "SET hlc = excluded.hlc, v = excluded.v WHERE excluded.hlc > kv.hlc",
                       ops, sizeof *ops, count, bind_lww, &ctx);
}

static int bind_counter(sqlite3_stmt *s, const void *o, const void *c) {
    (void)c;
    const tg_counter_op *op = o;
    char kb[32];
    int n = snprintf(kb, sizeof kb, "key-%u", op->key);
    sqlite3_bind_text(s, 1, kb, n, SQLITE_TRANSIENT);
    sqlite3_bind_int(s, 2, (int)op->node);
    sqlite3_bind_int64(s, 3, (sqlite3_int64)op->p);
    sqlite3_bind_int64(s, 4, (sqlite3_int64)op->n);
    return 0;
}

long tg_sqlite_counter(tg_run *run, const tg_counter_op *ops, size_t count) {
    sqlite3 *db = open_db(run, "CREATE TABLE c(k TEXT, node INTEGER, p INTEGER, n INTEGER, PRIMARY KEY(k, node)) WITHOUT ROWID;");
    if (!db) return -1;
    return run_batches(run, db,
                       "INSERT INTO c(k, node, p, n) VALUES (?1, ?2, ?3, ?4) ON CONFLICT(k, node) DO UPDATE "
                       "SET p = max(p, excluded.p), n = max(n, excluded.n) WHERE excluded.p > p OR excluded.n > n",
                       ops, sizeof *ops, count, bind_counter, NULL);
}

static int bind_orset(sqlite3_stmt *s, const void *o, const void *c) {
    (void)c;
    const tg_orset_op *op = o;
    char kb[32];
    int n = snprintf(kb, sizeof kb, "key-%u", op->key);
    sqlite3_bind_text(s, 1, kb, n, SQLITE_TRANSIENT);
    sqlite3_bind_blob(s, 2, op->tag, 16, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, (sqlite3_int64)op->value);
    sqlite3_bind_int(s, 4, op->remove ? 1 : 0);
    return 0;
}

long tg_sqlite_orset(tg_run *run, const tg_orset_op *ops, size_t count) {
    sqlite3 *db = open_db(run, "CREATE TABLE s(k TEXT, tag BLOB, v INTEGER, removed INTEGER, PRIMARY KEY(k, tag)) WITHOUT ROWID;");
    if (!db) return -1;
    return run_batches(run, db,
                       "INSERT INTO s(k, tag, v, removed) VALUES (?1, ?2, ?3, ?4) ON CONFLICT(k, tag) DO UPDATE "
                       "SET removed = 1 WHERE excluded.removed = 1 AND removed = 0",
                       ops, sizeof *ops, count, bind_orset, NULL);
}

static uint32_t parse_key(const unsigned char *p) {
    uint32_t k = 0;
    for (p += 4; *p >= '0' && *p <= '9'; p++) k = k * 10 + (uint32_t)(*p - '0');
    return k;
}

int tg_sqlite_summary(const char *dir, int kind, uint32_t keys, tg_summary *out, char *error) {
    (void)keys;
    char path[1024];
    snprintf(path, sizeof path, "%s/bench.sqlite", dir);
    sqlite3 *db;
    sqlite3_stmt *stmt;
    out->live = 0;
    out->digest = 0;
    const char *sql = kind == TG_KIND_LWW       ? "SELECT k, hlc FROM kv"
                      : kind == TG_KIND_COUNTER ? "SELECT k, sum(p) - sum(n) FROM c GROUP BY k"
                                                : "SELECT k, tag FROM s WHERE removed = 0";
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) != SQLITE_OK) {
        snprintf(error, 256, "sqlite summary: %s", sqlite3_errmsg(db));
        sqlite3_close(db);
        return -1;
    }
    while (sqlite3_step(stmt) == SQLITE_ROW) {
        uint32_t key = parse_key(sqlite3_column_text(stmt, 0));
        out->live++;
        if (kind == TG_KIND_COUNTER) {
            out->digest ^= tg_mix(key, (uint64_t)sqlite3_column_int64(stmt, 1));
        } else {
            const uint8_t *h = sqlite3_column_blob(stmt, 1);
            uint64_t hi, lo;
            memcpy(&hi, h, 8);
            memcpy(&lo, h + 8, 8);
            out->digest ^= tg_mix(tg_mix(key, __builtin_bswap64(hi)), __builtin_bswap64(lo));
        }
    }
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return 0;
}
