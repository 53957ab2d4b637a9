/* How fast one and two threads read the weights of ResNet-34's eleven
 * batch-1 2x2 layers (11 buffers of 2.36 MB, one after the other, each
 * split into contiguous halves between the threads), once they are in the
 * last-level cache: best of 50 passes. The bound a batch-1 run of those
 * layers can reach, against which `cnnc bench --profile` compares them.
 *   gcc -O3 -march=native -fopenmp benches/weights_stream.c -o /tmp/weights_stream
 *   /tmp/weights_stream
 * Needs AVX-512 (four accumulators of 16 lanes). */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

enum { LAYERS = 11 };

int main(void) {
  size_t n = 3 * 3 * 256 * 256; /* floats of one layer's kernel */
  float *layers[LAYERS];
  for (size_t i = 0; i < LAYERS; i++) {
    layers[i] = aligned_alloc(64, n * sizeof(float));
    if (!layers[i]) {
      fprintf(stderr, "out of memory\n");
      return 1;
    }
    for (size_t j = 0; j < n; j++) layers[i][j] = (float)j * 1e-7f;
  }
  for (int threads = 1; threads <= 2; threads++) {
    double best = 1e9;
    float total = 0;
    for (int pass = 0; pass < 50; pass++) {
      double start = omp_get_wtime();
      for (size_t i = 0; i < LAYERS; i++) {
#pragma omp parallel num_threads(threads) reduction(+ : total)
        {
          int id = omp_get_thread_num();
          size_t lo = n * id / threads / 64 * 64, hi = n * (id + 1) / threads / 64 * 64;
          __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
          for (size_t j = lo; j < hi; j += 64) {
            s0 = _mm512_add_ps(s0, _mm512_load_ps(layers[i] + j));
            s1 = _mm512_add_ps(s1, _mm512_load_ps(layers[i] + j + 16));
            s2 = _mm512_add_ps(s2, _mm512_load_ps(layers[i] + j + 32));
            s3 = _mm512_add_ps(s3, _mm512_load_ps(layers[i] + j + 48));
          }
          total += _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
        }
      }
      double t = omp_get_wtime() - start;
      if (t < best) best = t;
    }
    double bytes = (double)LAYERS * n * sizeof(float);
    printf("%d thread(s): %.3f ms for %.1f MB, %.1f GB/s (checksum %g)\n", threads, best * 1e3,
           bytes / 1e6, bytes / best / 1e9, total);
  }
  return 0;
}
