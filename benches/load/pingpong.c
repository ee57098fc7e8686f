/* Context-switch load for benches/cpu_sources.sh: PAIRS pairs of processes bounce one byte through
 * two pipes; with GAP_US > 0 the pinging side sleeps that long after each round trip (a lower
 * rate). Runs SECONDS seconds, then kills its process group and exits.
 * Usage: pingpong PAIRS GAP_US SECONDS */
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

static void bounce(int in, int out, int gap_us, int first) {
    char byte = 0;
    if (first && write(out, &byte, 1) != 1) _exit(1);
    for (;;) {
        if (read(in, &byte, 1) != 1) _exit(0);
        if (gap_us > 0) usleep(gap_us);
        if (write(out, &byte, 1) != 1) _exit(0);
    }
}

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    int pairs = atoi(argv[1]), gap_us = atoi(argv[2]), seconds = atoi(argv[3]);
    setpgid(0, 0);
    for (int i = 0; i < pairs; i++) {
        int a[2], b[2];
        if (pipe(a) || pipe(b)) return 1;
        if (fork() == 0) bounce(a[0], b[1], 0, 0);
        if (fork() == 0) bounce(b[0], a[1], gap_us, 1);
        close(a[0]); close(a[1]); close(b[0]); close(b[1]);
    }
    sleep(seconds);
    signal(SIGTERM, SIG_IGN);
    kill(0, SIGTERM);
    return 0;
}
