#include "baselines.h"
#include <rocksdb/c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Merge operators: each picks the same winner as the CRDT merge, so deferred merges
// reach the same state. Results are malloc'd; RocksDB frees them with delete_value.

static char *dup_bytes(const char *p, size_t n) {
    char *out = malloc(n ? n : 1);
    memcpy(out, p, n);
    return out;
}

/// LWW: the value with the greatest 16-byte HLC prefix wins.
static char *lww_pick(const char *existing, size_t existing_len, const char *const *ops, const size_t *lens, int n,
                      size_t *out_len) {
    const char *best = existing;
    size_t best_len = existing_len;
    for (int i = 0; i < n; i++) {
        if (!best || (lens[i] >= 16 && memcmp(ops[i], best, 16) > 0)) {
            best = ops[i];
            best_len = lens[i];
        }
    }
    *out_len = best_len;
    return dup_bytes(best, best_len);
}

static char *lww_full(void *s, const char *k, size_t kl, const char *ev, size_t evl, const char *const *ops,
                      const size_t *lens, int n, unsigned char *ok, size_t *out_len) {
    (void)s, (void)k, (void)kl;
    *ok = 1;
    return lww_pick(ev, ev ? evl : 0, ops, lens, n, out_len);
}

static char *lww_partial(void *s, const char *k, size_t kl, const char *const *ops, const size_t *lens, int n,
                         unsigned char *ok, size_t *out_len) {
    (void)s, (void)k, (void)kl;
    *ok = 1;
    return lww_pick(NULL, 0, ops, lens, n, out_len);
}

/// Counters: a value is 8 nodes x (p, n); an operand is one node's totals (20 bytes) or
/// a full array (128 bytes). Merge takes the per-node maximum.
static void counter_fold(uint64_t *t, const char *op, size_t len) {
    if (len == 128) {
        uint64_t o[16];
        memcpy(o, op, 128);
        for (int i = 0; i < 16; i++) if (o[i] > t[i]) t[i] = o[i];
    } else if (len == 20) {
        uint32_t node;
        uint64_t p, n;
        memcpy(&node, op, 4);
        memcpy(&p, op + 4, 8);
        memcpy(&n, op + 12, 8);
        node &= 7;
        if (p > t[2 * node]) t[2 * node] = p;
        if (n > t[2 * node + 1]) t[2 * node + 1] = n;
    }
}

static char *counter_full(void *s, const char *k, size_t kl, const char *ev, size_t evl, const char *const *ops,
                          const size_t *lens, int n, unsigned char *ok, size_t *out_len) {
    (void)s, (void)k, (void)kl;
    uint64_t t[16] = {0};
    if (ev) counter_fold(t, ev, evl);
    for (int i = 0; i < n; i++) counter_fold(t, ops[i], lens[i]);
    *ok = 1;
    *out_len = 128;
    return dup_bytes((const char *)t, 128);
}

static char *counter_partial(void *s, const char *k, size_t kl, const char *const *ops, const size_t *lens, int n,
                             unsigned char *ok, size_t *out_len) {
    return counter_full(s, k, kl, NULL, 0, ops, lens, n, ok, out_len);
}

/// OR-set entry: 'A' + value until any 'R' arrives; 'R' is final.
static char *orset_full(void *s, const char *k, size_t kl, const char *ev, size_t evl, const char *const *ops,
                        const size_t *lens, int n, unsigned char *ok, size_t *out_len) {
    (void)s, (void)k, (void)kl;
    const char *pick = ev;
    size_t pick_len = ev ? evl : 0;
    for (int i = 0; i < n; i++) {
        if (lens[i] >= 1 && ops[i][0] == 'R') { pick = ops[i]; pick_len = lens[i]; break; }
        if (!pick) { pick = ops[i]; pick_len = lens[i]; }
    }
    if (pick && pick_len >= 1 && pick[0] != 'R') {
        for (int i = 0; i < n; i++) if (lens[i] >= 1 && ops[i][0] == 'R') { pick = ops[i]; pick_len = lens[i]; }
    }
    *ok = 1;
    *out_len = pick_len;
    return dup_bytes(pick, pick_len);
}

static char *orset_partial(void *s, const char *k, size_t kl, const char *const *ops, const size_t *lens, int n,
                           unsigned char *ok, size_t *out_len) {
    return orset_full(s, k, kl, NULL, 0, ops, lens, n, ok, out_len);
}

static void delete_value(void *s, const char *v, size_t l) {
    (void)s, (void)l;
    free((void *)v);
}

static void noop_destructor(void *s) { (void)s; }
static const char *name_lww(void *s) { (void)s; return "topgun-lww"; }
static const char *name_counter(void *s) { (void)s; return "topgun-counter"; }
static const char *name_orset(void *s) { (void)s; return "topgun-orset"; }

static rocksdb_t *open_db(const char *dir, int kind, char *error, rocksdb_options_t **opts_out) {
    rocksdb_options_t *opts = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(opts, 1);
    rocksdb_options_increase_parallelism(opts, 2);
    rocksdb_mergeoperator_t *op =
        kind == TG_KIND_LWW
            ? rocksdb_mergeoperator_create(NULL, noop_destructor, lww_full, lww_partial, delete_value, name_lww)
        : kind == TG_KIND_COUNTER
            ? rocksdb_mergeoperator_create(NULL, noop_destructor, counter_full, counter_partial, delete_value, name_counter)
            : rocksdb_mergeoperator_create(NULL, noop_destructor, orset_full, orset_partial, delete_value, name_orset);
    rocksdb_options_set_merge_operator(opts, op);
    char *err = NULL;
    rocksdb_t *db = rocksdb_open(opts, dir, &err);
    if (err) {
        snprintf(error, 256, "rocksdb open: %s", err);
        free(err);
        rocksdb_options_destroy(opts);
        return NULL;
    }
    *opts_out = opts;
    return db;
}

typedef void (*add_fn)(rocksdb_writebatch_t *wb, const void *op, const void *ctx);

static long run_batches(tg_run *run, int kind, const void *ops, size_t stride, size_t count, add_fn add,
                        const void *ctx, uint32_t keys) {
    rocksdb_options_t *opts = NULL;
    rocksdb_t *db = open_db(run->dir, kind, run->error, &opts);
    if (!db) return -1;
    rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(wo, run->durable ? 1 : 0);
    rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
    char *err = NULL;
    for (size_t start = 0, b = 0; start < count; start += run->batch, b++) {
        double t0 = tg_now();
        size_t end = start + run->batch < count ? start + run->batch : count;
        rocksdb_writebatch_clear(wb);
        for (size_t i = start; i < end; i++) add(wb, (const char *)ops + i * stride, ctx);
        rocksdb_write(db, wo, wb, &err);
        if (err) {
            snprintf(run->error, sizeof run->error, "rocksdb write: %s", err);
            free(err);
            count = 0;
            break;
        }
        if (run->batch_seconds) run->batch_seconds[b] = tg_now() - t0;
    }
    // Read everything back so the deferred merges are paid for inside the timing.
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_iterator_t *it = rocksdb_create_iterator(db, ro);
    long seen = 0;
    for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t vl;
        const char *v = rocksdb_iter_value(it, &vl);
        seen += (vl > 0 && v != NULL);
    }
    (void)keys;
    rocksdb_iter_destroy(it);
    rocksdb_readoptions_destroy(ro);
    rocksdb_writebatch_destroy(wb);
    rocksdb_writeoptions_destroy(wo);
    rocksdb_close(db);
    rocksdb_options_destroy(opts);
    return count == 0 && run->error[0] ? -1 : seen;
}

typedef struct { const uint8_t *value; size_t len; } lww_ctx;

static void add_lww(rocksdb_writebatch_t *wb, const void *o, const void *c) {
    const tg_lww_op *op = o;
    const lww_ctx *ctx = c;
    char kb[32], v[256];
    int kl = snprintf(kb, sizeof kb, "key-%u", op->key);
    memcpy(v, op->hlc, 16);
    memcpy(v + 16, ctx->value, ctx->len);
    rocksdb_writebatch_merge(wb, kb, (size_t)kl, v, 16 + ctx->len);
}

long tg_rocksdb_lww(tg_run *run, const tg_lww_op *ops, size_t count, const uint8_t *value, size_t len, uint32_t keys) {
    if (len > 240) { snprintf(run->error, sizeof run->error, "value too long"); return -1; }
    lww_ctx ctx = {value, len};
    return run_batches(run, TG_KIND_LWW, ops, sizeof *ops, count, add_lww, &ctx, keys);
}

static void add_counter(rocksdb_writebatch_t *wb, const void *o, const void *c) {
    (void)c;
    const tg_counter_op *op = o;
    char kb[32], v[20];
    int kl = snprintf(kb, sizeof kb, "key-%u", op->key);
    memcpy(v, &op->node, 4);
    memcpy(v + 4, &op->p, 8);
    memcpy(v + 12, &op->n, 8);
    rocksdb_writebatch_merge(wb, kb, (size_t)kl, v, 20);
}

long tg_rocksdb_counter(tg_run *run, const tg_counter_op *ops, size_t count, uint32_t keys) {
    return run_batches(run, TG_KIND_COUNTER, ops, sizeof *ops, count, add_counter, NULL, keys);
}

static void add_orset(rocksdb_writebatch_t *wb, const void *o, const void *c) {
    (void)c;
    const tg_orset_op *op = o;
    char kb[64], v[9];
    int kl = snprintf(kb, 32, "key-%u", op->key);
    kb[kl] = '/';
    memcpy(kb + kl + 1, op->tag, 16);
    v[0] = op->remove ? 'R' : 'A';
    memcpy(v + 1, &op->value, 8);
    rocksdb_writebatch_merge(wb, kb, (size_t)kl + 17, v, op->remove ? 1 : 9);
}

long tg_rocksdb_orset(tg_run *run, const tg_orset_op *ops, size_t count, uint32_t keys) {
    return run_batches(run, TG_KIND_ORSET, ops, sizeof *ops, count, add_orset, NULL, keys);
}

static uint32_t parse_key(const char *p, size_t n) {
    uint32_t k = 0;
    for (size_t i = 4; i < n && p[i] >= '0' && p[i] <= '9'; i++) k = k * 10 + (uint32_t)(p[i] - '0');
    return k;
}

int tg_rocksdb_summary(const char *dir, int kind, uint32_t keys, tg_summary *out, char *error) {
    (void)keys;
    rocksdb_options_t *opts = NULL;
    rocksdb_t *db = open_db(dir, kind, error, &opts);
    if (!db) return -1;
    out->live = 0;
    out->digest = 0;
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_iterator_t *it = rocksdb_create_iterator(db, ro);
    for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t kl, vl;
        const char *k = rocksdb_iter_key(it, &kl);
        const char *v = rocksdb_iter_value(it, &vl);
        if (kind == TG_KIND_LWW) {
            uint64_t hi, lo;
            memcpy(&hi, v, 8);
            memcpy(&lo, v + 8, 8);
            out->live++;
            out->digest ^= tg_mix(tg_mix(parse_key(k, kl), __builtin_bswap64(hi)), __builtin_bswap64(lo));
        } else if (kind == TG_KIND_COUNTER) {
            uint64_t t[16];
            memcpy(t, v, 128);
            int64_t value = 0;
            for (int i = 0; i < 8; i++) value += (int64_t)(t[2 * i] - t[2 * i + 1]);
            out->live++;
            out->digest ^= tg_mix(parse_key(k, kl), (uint64_t)value);
        } else if (vl >= 1 && v[0] == 'A') {
            size_t slash = kl - 17;
            uint64_t hi, lo;
            memcpy(&hi, k + slash + 1, 8);
            memcpy(&lo, k + slash + 9, 8);
            out->live++;
            out->digest ^= tg_mix(tg_mix(parse_key(k, slash), __builtin_bswap64(hi)), __builtin_bswap64(lo));
        }
    }
    rocksdb_iter_destroy(it);
    rocksdb_readoptions_destroy(ro);
    rocksdb_close(db);
    rocksdb_options_destroy(opts);
    return 0;
}
