/* What bounds the direct kernel gradient of a first layer? The seed CNN's
 * conv1 (7x7, 1 input channel, 64 output channels) sums, for each kernel
 * row and each position of the output gradient, 7 broadcast input values
 * times 2 vectors of 16 output channels: 14 multiply-adds, 2 vector loads
 * and 7 broadcasts (`direct::gradient`, items of 32 channels). In cnnc it
 * takes about 16 cycles a position, where two multiply-adds a cycle would
 * take 7.
 *
 * This times the same loop on one image's rows kept in L1 (8 rows of the
 * output gradient, 28 KB), best of 200, three ways:
 *   default       the broadcasts as cnnc's loop makes them (vbroadcastss)
 *   -DEMBEDDED    each multiply-add reading its value with an embedded
 *                 broadcast ({1to16}), no separate broadcast
 *   -DNO_BROADCAST the 7 values in registers: the multiply-adds and the
 *                 output gradient's loads alone
 *   gcc -O3 -march=native [-DEMBEDDED|-DNO_BROADCAST] \
 *       benches/gradient_broadcast.c -o /tmp/gradient_broadcast
 *   /tmp/gradient_broadcast
 * Cycles are at 3.6 GHz, the clock `../shared/peers/fma/fma_peak.c`
 * estimates on the Intel machine of docs/performance.md's eleventh part.
 * Needs AVX-512. */
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { WIDTH = 28, ROWS = 8, COUT = 64, PADDED = WIDTH + 6, RUN = 7 };

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void) {
    float *dy = aligned_alloc(64, sizeof(float) * ROWS * WIDTH * COUT);
    float *line = aligned_alloc(64, sizeof(float) * ROWS * PADDED);
    float *out = aligned_alloc(64, sizeof(float) * RUN * COUT);
    for (int i = 0; i < ROWS * WIDTH * COUT; i++) dy[i] = (float)(i % 97) * 0.01f;
    for (int i = 0; i < ROWS * PADDED; i++) line[i] = (float)(i % 13) * 0.1f;
    double best = 1e9;
    for (int rep = 0; rep < 200; rep++) {
        double start = now();
        for (int ky = 0; ky < RUN; ky++) {
            __m512 acc[RUN][2];
#ifdef NO_BROADCAST
            __m512 held[RUN];
            for (int r = 0; r < RUN; r++) held[r] = _mm512_set1_ps(line[r] * 0.5f + ky);
#endif
            for (int r = 0; r < RUN; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
            for (int oy = 0; oy < ROWS; oy++) {
                const float *x = line + oy * PADDED;
                const float *d = dy + oy * WIDTH * COUT;
                for (int i = 0; i < WIDTH; i++) {
                    __m512 d0 = _mm512_load_ps(d + i * COUT);
                    __m512 d1 = _mm512_load_ps(d + i * COUT + 16);
                    for (int r = 0; r < RUN; r++) {
#if defined(EMBEDDED)
                        __asm__("vfmadd231ps %1%{1to16%}, %2, %0"
                                : "+v"(acc[r][0]) : "m"(x[i + r]), "v"(d0));
                        __asm__("vfmadd231ps %1%{1to16%}, %2, %0"
                                : "+v"(acc[r][1]) : "m"(x[i + r]), "v"(d1));
#elif defined(NO_BROADCAST)
                        acc[r][0] = _mm512_fmadd_ps(held[r], d0, acc[r][0]);
                        acc[r][1] = _mm512_fmadd_ps(held[r], d1, acc[r][1]);
#else
                        __m512 value = _mm512_set1_ps(x[i + r]);
                        acc[r][0] = _mm512_fmadd_ps(value, d0, acc[r][0]);
                        acc[r][1] = _mm512_fmadd_ps(value, d1, acc[r][1]);
#endif
                    }
                }
            }
            for (int r = 0; r < RUN; r++) {
                _mm512_store_ps(out + r * COUT, acc[r][0]);
                _mm512_store_ps(out + r * COUT + 16, acc[r][1]);
            }
        }
        double t = now() - start;
        if (t < best) best = t;
    }
    double positions = (double)RUN * ROWS * WIDTH;
    printf("%.2f ns a position, %.2f cycles at 3.6 GHz (checksum %f)\n",
           best / positions * 1e9, best / positions * 3.6e9, out[3]);
    return 0;
}
