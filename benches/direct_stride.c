/* Does the layout of a Winograd transformed kernel slow the batch-1
 * direct products down? `direct::product` sums blocks of 6 rows by 64
 * columns in registers and reads a block of 64 columns of the right
 * operand a row at a time; the transformed kernel U[point][k][cout] puts
 * those rows `cout` floats apart (512 B or 1 KB), so a 64-column block of
 * 128 or 256 rows maps onto a quarter or an eighth of L1's sets and is
 * read again from L2 for every block of 6 rows. Panels of 64 columns
 * (U[point][cout / 64][k][64]) make each block contiguous.
 *
 * This times one thread's item of the seed CNN's batch-1 layers as cnnc
 * runs them (`cnnc bench examples/fashion_cnn.cnn --profile`), on both
 * layouts, with the kernel read from the last-level cache (8 copies in
 * turn, as a batch-1 run reads every layer's kernel once), best of 200:
 *   gcc -O3 -march=native benches/direct_stride.c -o /tmp/direct_stride
 *   /tmp/direct_stride
 * Needs AVX-512. */
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { ROWS = 6, COPIES = 8, PREFETCH = 16 };

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

/* dst[r][c] = sum_k lhs[r][k] * rhs[k * rs + c], rows row..row+R, 64
 * columns from c0 (rhs already offset to the block). */
static inline __attribute__((always_inline)) void block(int R, const float *lhs, int k_len, const float *rhs, size_t rs,
                         float *dst, size_t ds) {
  __m512 acc[ROWS][4];
  for (int r = 0; r < R; r++)
    for (int v = 0; v < 4; v++) acc[r][v] = _mm512_setzero_ps();
  for (int k = 0; k < k_len; k++) {
    const float *w = rhs + k * rs;
    for (int v = 0; v < 4; v++) _mm_prefetch((const char *)(w + PREFETCH * rs + 16 * v), _MM_HINT_T0);
    __m512 w0 = _mm512_loadu_ps(w), w1 = _mm512_loadu_ps(w + 16), w2 = _mm512_loadu_ps(w + 32),
           w3 = _mm512_loadu_ps(w + 48);
    for (int r = 0; r < R; r++) {
      __m512 a = _mm512_set1_ps(lhs[r * k_len + k]);
      acc[r][0] = _mm512_fmadd_ps(a, w0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(a, w1, acc[r][1]);
      acc[r][2] = _mm512_fmadd_ps(a, w2, acc[r][2]);
      acc[r][3] = _mm512_fmadd_ps(a, w3, acc[r][3]);
    }
  }
  for (int r = 0; r < R; r++)
    for (int v = 0; v < 4; v++) _mm512_storeu_ps(dst + r * ds + 16 * v, acc[r][v]);
}

/* One item: `points` products of m x k by k x cols (cols of cout). */
static void item(int panels, int points, int m, int k, int cols, int cout, const float *u,
                 const float *v, float *out) {
  for (int p = 0; p < points; p++) {
    const float *up = u + (size_t)p * k * cout;
    const float *vp = v + (size_t)p * m * k;
    float *op = out + (size_t)p * m * cout;
    for (int c = 0; c < cols; c += 64) {
      const float *rhs = panels ? up + (size_t)(c / 64) * k * 64 : up + c;
      size_t rs = panels ? 64 : (size_t)cout;
      for (int row = 0; row < m; row += ROWS) {
        const float *l = vp + row * k;
        float *d = op + row * cout + c;
        /* constant row counts, so that the sums stay in registers */
        switch (m - row < ROWS ? m - row : ROWS) {
          case 6: block(6, l, k, rhs, rs, d, cout); break;
          case 4: block(4, l, k, rhs, rs, d, cout); break;
          case 2: block(2, l, k, rhs, rs, d, cout); break;
          default: fprintf(stderr, "rows %d\n", m - row); exit(1);
        }
      }
    }
  }
}

static void run(const char *name, int points, int m, int k, int cols, int cout) {
  size_t u_len = (size_t)points * k * cout;
  float *u[COPIES];
  for (int i = 0; i < COPIES; i++) {
    u[i] = aligned_alloc(64, u_len * sizeof(float));
    for (size_t j = 0; j < u_len; j++) u[i][j] = (float)(j % 97) * 1e-3f;
  }
  float *v = aligned_alloc(64, (size_t)points * m * k * sizeof(float));
  float *out = aligned_alloc(64, (size_t)points * m * cout * sizeof(float));
  for (size_t j = 0; j < (size_t)points * m * k; j++) v[j] = (float)(j % 13) * 1e-2f;
  double flops = 2.0 * points * m * k * cols;
  for (int panels = 0; panels <= 1; panels++) {
    double best = 1e9;
    for (int pass = 0; pass < 200; pass++) {
      double t = now();
      item(panels, points, m, k, cols, cout, u[pass % COPIES], v, out);
      t = now() - t;
      if (t < best) best = t;
    }
    printf("%-34s %-9s %7.1f us  %6.1f GFLOP/s\n", name, panels ? "panels" : "row-major",
           best * 1e6, flops / best * 1e-9);
  }
  for (int i = 0; i < COPIES; i++) free(u[i]);
  free(v);
  free(out);
}

int main(void) {
  /* conv3 at batch 1: F(4x4), 36 points, items of 8 tiles, every channel */
  run("conv3 F(4x4) 8 tiles x 128 of 128", 36, 8, 128, 128, 128);
  /* conv5 at batch 1: F(2x2), 16 points, 16 tiles, half the channels */
  run("conv5 F(2x2) 16 tiles x 128 of 256", 16, 16, 256, 128, 256);
  /* conv4: 128 -> 256 */
  run("conv4 F(2x2) 16 tiles x 128 of 256", 16, 16, 128, 128, 256);
  /* batch 32: items of 32 tiles, F(4x4), every channel */
  run("b32 conv3 F(4x4) 32 tiles x 128", 36, 32, 128, 128, 128);
  run("b32 conv5 F(4x4) 32 tiles x 256", 36, 32, 256, 256, 256);
  return 0;
}
