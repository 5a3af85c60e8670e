/* flood: send one DNS query over and over from one address, as fast as possible or at a rate.
 *   flood SRC_IP DST_IP DST_PORT SECONDS [PPS] [NAME]
 * sendmmsg(2) in batches of 64 from one socket bound to SRC_IP; prints "sent N in S s".
 * Bounded by SECONDS; used by bench/attacks/flood_one_address.py (compiled there with cc). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: flood SRC_IP DST_IP DST_PORT SECONDS [PPS] [NAME]\n");
        return 2;
    }
    double seconds = atof(argv[4]), pps = argc > 5 ? atof(argv[5]) : 0;
    const char *name = argc > 6 ? argv[6] : "flood.bench.test";
    unsigned char q[300] = {0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0};
    size_t len = 12;
    for (const char *p = name; *p;) {          /* labels */
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        q[len++] = (unsigned char)n;
        memcpy(q + len, p, n);
        len += n;
        p += n + (dot != NULL);
    }
    q[len++] = 0;
    q[len++] = 0; q[len++] = 1; q[len++] = 0; q[len++] = 1;     /* A IN */
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in src = {.sin_family = AF_INET}, dst = {.sin_family = AF_INET};
    inet_pton(AF_INET, argv[1], &src.sin_addr);
    inet_pton(AF_INET, argv[2], &dst.sin_addr);
    dst.sin_port = htons((unsigned short)atoi(argv[3]));
    if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0 ||
            connect(fd, (struct sockaddr *)&dst, sizeof dst) < 0) {
        perror("flood: bind/connect");
        return 1;
    }
    int big = 1 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);  /* replies: never read */
    struct iovec iov = {.iov_base = q, .iov_len = len};
    struct mmsghdr msgs[BATCH];
    memset(msgs, 0, sizeof msgs);
    for (int i = 0; i < BATCH; i++) {
        msgs[i].msg_hdr.msg_iov = &iov;
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    double start = now(), end = start + seconds, t;
    unsigned long long sent = 0;
    while ((t = now()) < end) {
        if (pps > 0 && sent > (t - start) * pps) {
            usleep(200);
            continue;
        }
        int n = sendmmsg(fd, msgs, BATCH, 0);
        if (n > 0)
            sent += (unsigned long long)n;
    }
    printf("sent %llu in %.2f s\n", sent, now() - start);
    return 0;
}
