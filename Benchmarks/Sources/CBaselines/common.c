#include "baselines.h"
#include <time.h>

double tg_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/// MurmurHash3 fmix64 over h ^ v: enough to detect differing final states.
uint64_t tg_mix(uint64_t h, uint64_t v) {
    uint64_t x = h ^ (v * 0x9e3779b97f4a7c15ULL);
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}
