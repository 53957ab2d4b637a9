/* How fast one thread reads a buffer of N MB, best of 20 passes, on 4 KiB
 * pages or, with a second argument, advised onto 2 MiB pages:
 *   gcc -O3 -march=native benches/bandwidth.c -o /tmp/bandwidth
 *   /tmp/bandwidth 85; /tmp/bandwidth 85 huge
 * Needs AVX-512 (four accumulators of 16 lanes, so that the adds never
 * wait on each other). */
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s MB [huge]\n", argv[0]);
    return 2;
  }
  size_t mb = strtoul(argv[1], NULL, 10);
  int huge = argc > 2;
  size_t n = mb * 1024 * 1024 / sizeof(float) / 64 * 64;
  if (n == 0) {
    fprintf(stderr, "MB must be at least 1\n");
    return 2;
  }
  float *a = aligned_alloc(2 << 20, n * sizeof(float));
  if (!a) {
    perror("aligned_alloc");
    return 1;
  }
  if (huge)
    madvise(a, n * sizeof(float), MADV_HUGEPAGE);
  for (size_t i = 0; i < n; i++)
    a[i] = (float)(i & 7);
  double best = 1e9;
  volatile float sink;
  for (int pass = 0; pass < 20; pass++) {
    double t = now();
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (size_t i = 0; i < n; i += 64) {
      s0 = _mm512_add_ps(s0, _mm512_load_ps(a + i));
      s1 = _mm512_add_ps(s1, _mm512_load_ps(a + i + 16));
      s2 = _mm512_add_ps(s2, _mm512_load_ps(a + i + 32));
      s3 = _mm512_add_ps(s3, _mm512_load_ps(a + i + 48));
    }
    sink = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
    t = now() - t;
    if (t < best)
      best = t;
  }
  (void)sink;
  printf("%zu MB%s: %.1f GB/s\n", mb, huge ? " on huge pages" : "", n * sizeof(float) / best / 1e9);
  free(a);
  return 0;
}
