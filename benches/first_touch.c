/* How long the first write to fresh memory takes: the page faults of
 * memory a program allocates and then writes for the first time (the
 * optimizer state of ResNet-34 is 170 MB), with 4 KiB pages and with
 * transparent huge pages asked for by madvise.
 *
 *   cc -O2 benches/first_touch.c -o /tmp/first_touch && /tmp/first_touch [MiB]
 *
 * docs/performance.md (issue 13, thirteenth part) quotes its runs. */
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
  size_t mib = argc > 1 ? strtoul(argv[1], 0, 10) : 270;
  size_t len = mib << 20, huge = 2u << 20;
  for (int madvised = 0; madvised < 2; madvised++) {
    char *map = mmap(0, len + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED) {
      perror("mmap");
      return 1;
    }
    char *at = (char *)(((size_t)map + huge - 1) & ~(huge - 1));
    if (madvised && madvise(at, len, MADV_HUGEPAGE) != 0) perror("madvise");
    double start = now();
    for (size_t i = 0; i < len; i += 4096) at[i] = 1;
    double first = now();
    for (size_t i = 0; i < len; i += 4096) at[i] = 2;
    double second = now();
    printf("%s: first write %.1f ms, second %.1f ms (%zu MiB)\n",
           madvised ? "MADV_HUGEPAGE" : "4 KiB pages", (first - start) * 1e3,
           (second - first) * 1e3, mib);
    munmap(map, len + huge);
  }
  return 0;
}
