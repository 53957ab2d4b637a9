/* The instruction rates behind the bf16 backends, on one core: f32 FMA
 * (vfmadd231ps, 16 multiply-adds), AVX512-BF16 (vdpbf16ps, 32) and AMX
 * (tdpbf16ps on 16x16 tiles, 8192), each on independent accumulators so
 * that only throughput counts. Prints each in instructions and GFLOP/s
 * (two a multiply-add).
 *
 *   gcc -O2 -mavx512f -mavx512bf16 -mamx-tile -mamx-bf16 \
 *       benches/bf16_peak.c -o /tmp/bf16_peak && /tmp/bf16_peak
 *
 * docs/backend.md ("bf16") quotes its runs. */
#include <immintrin.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define ACCUMULATORS 24

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static void report(const char *name, double instructions, double seconds, double flops_each) {
  printf("%-10s %6.2f G instructions/s  %7.1f GFLOP/s\n", name, instructions / seconds * 1e-9,
         instructions / seconds * flops_each * 1e-9);
}

static float vectors(long rounds) {
  __m512 acc[ACCUMULATORS];
  for (int i = 0; i < ACCUMULATORS; i++) acc[i] = _mm512_set1_ps(i * 1e-3f);
  __m512 x = _mm512_set1_ps(1.0001f), y = _mm512_set1_ps(0.9999f);
  double start = now();
  for (long r = 0; r < rounds; r++)
#pragma GCC unroll 24
    for (int i = 0; i < ACCUMULATORS; i++) acc[i] = _mm512_fmadd_ps(x, y, acc[i]);
  report("fma", (double)rounds * ACCUMULATORS, now() - start, 32);
  __m512bh a = (__m512bh)_mm512_set1_epi32(0x3f803f80), b = (__m512bh)_mm512_set1_epi32(0x3f7f3f7f);
  start = now();
  for (long r = 0; r < rounds; r++)
#pragma GCC unroll 24
    for (int i = 0; i < ACCUMULATORS; i++) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
  report("vdpbf16ps", (double)rounds * ACCUMULATORS, now() - start, 64);
  float sum = 0;
  for (int i = 0; i < ACCUMULATORS; i++) sum += _mm512_reduce_add_ps(acc[i]);
  return sum;
}

struct tile_config {
  unsigned char palette, start_row, reserved[14];
  unsigned short bytes_per_row[16];
  unsigned char rows[16];
};

static float tiles(long rounds) {
  /* ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA */
  if (syscall(SYS_arch_prctl, 0x1023, 18) != 0) {
    printf("tdpbf16ps  not offered by this kernel or CPU\n");
    return 0;
  }
  struct tile_config config;
  memset(&config, 0, sizeof config);
  config.palette = 1;
  for (int i = 0; i < 8; i++) config.bytes_per_row[i] = 64, config.rows[i] = 16;
  _tile_loadconfig(&config);
  static unsigned short ones[16 * 32];
  static float out[16 * 16];
  for (int i = 0; i < 16 * 32; i++) ones[i] = 0x3f80;
  _tile_loadd(4, ones, 64);
  _tile_loadd(5, ones, 64);
  _tile_loadd(6, ones, 64);
  _tile_loadd(7, ones, 64);
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  double start = now();
  for (long r = 0; r < rounds; r++) {
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  report("tdpbf16ps", rounds * 4.0, now() - start, 2 * 16 * 16 * 32);
  _tile_stored(0, out, 64);
  _tile_release();
  return out[0];
}

int main(void) {
  float a = vectors(10000000);
  float b = tiles(5000000);
  printf("(checksums %g %g)\n", a, b);
  return 0;
}
