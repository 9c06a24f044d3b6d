/* Forks four workers that touch disjoint memory: worker w stores 4 times to every 64th byte of
 * slice w of a static area (65536 stores each), concurrently. The parent touches none of it.
 * argv[1]: a file the area's address is written to. Used by the `record` tests. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define SLICE (1 << 20)
static char area[4 * SLICE];

int main(int argc, char **argv) {
    if (argc > 1) {
        FILE *f = fopen(argv[1], "w");
        if (!f) return 2;
        fprintf(f, "%lx\n", (unsigned long)area);
        fclose(f);
    }
    for (int w = 0; w < 4; w++) {
        if (fork() == 0) {
            volatile char *p = area + (long)w * SLICE;
            for (int r = 0; r < 4; r++)
                for (long i = 0; i < SLICE; i += 64) p[i] = (char)(w + r);
            _exit(0);
        }
    }
    while (wait(NULL) > 0) {
    }
    return 0;
}
