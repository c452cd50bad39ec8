/* count_sink: a minimal, cheap SMTP sink that counts delivered messages.
 *
 *   count_sink ADDR PORT COUNTFILE [MAX_SECONDS]
 *
 * Listens on ADDR:PORT (use 127.0.0.1), accepts any SMTP transaction,
 * throws the data away and counts every "250" it gives after the end of DATA
 * ("<CRLF>.<CRLF>"). Supports pipelining. Single thread, epoll, level
 * triggered, 64 KiB reads, one send() per batch of replies.
 *
 * COUNTFILE is rewritten in place (fixed width, pwrite at offset 0) whenever
 * the count changed, at most every 2 ms, and at exit:
 *   "<count> <unix time of the last counted message, seconds.micro>\n"
 * so a reader gets the exact time the last message arrived.
 * Stops on SIGTERM/SIGINT, or by itself after MAX_SECONDS (default 3600).
 *
 * Build: cc -O2 -o count_sink bench/count_sink.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RBUF (64 * 1024)
#define LINEMAX 4096

struct conn {
    int fd;
    int in_data;   /* 0 = command mode, 1 = in DATA */
    int st;        /* DATA end matcher: 0 mid-line, 1 line start, 2 ".", 3 ".\r" */
    int quit;
    int want_out;  /* EPOLLOUT registered */
    size_t llen;   /* command line bytes buffered */
    char line[LINEMAX];
    char *out;     /* pending output */
    size_t olen, ocap;
};

static volatile sig_atomic_t stop_flag;
static void on_sig(int s) { (void)s; stop_flag = 1; }

static unsigned long long count;
static double last_time;
static int count_fd;

static double now_real(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}
static double now_mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void write_count(void) {
    char b[64];
    int n = snprintf(b, sizeof b, "%020llu %20.6f\n", count, last_time);
    if (pwrite(count_fd, b, (size_t)n, 0) < 0) perror("pwrite");
}

static void out_add(struct conn *c, const char *s) {
    size_t n = strlen(s);
    if (c->olen + n > c->ocap) {
        size_t cap = c->ocap ? c->ocap * 2 : 1024;
        while (cap < c->olen + n) cap *= 2;
        char *p = realloc(c->out, cap);
        if (!p) { perror("realloc"); exit(1); }
        c->out = p;
        c->ocap = cap;
    }
    memcpy(c->out + c->olen, s, n);
    c->olen += n;
}

static void command(struct conn *c, char *line) {
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\r' || line[n - 1] == '\n')) line[--n] = 0;
    if (!strncasecmp(line, "EHLO", 4))
        out_add(c, "250-sink.example.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 0\r\n");
    else if (!strncasecmp(line, "HELO", 4) || !strncasecmp(line, "MAIL", 4) ||
             !strncasecmp(line, "RCPT", 4) || !strncasecmp(line, "RSET", 4) ||
             !strncasecmp(line, "NOOP", 4))
        out_add(c, "250 2.0.0 Ok\r\n");
    else if (!strncasecmp(line, "DATA", 4)) {
        out_add(c, "354 End data with <CR><LF>.<CR><LF>\r\n");
        c->in_data = 1;
        c->st = 1;
    } else if (!strncasecmp(line, "QUIT", 4)) {
        out_add(c, "221 2.0.0 Bye\r\n");
        c->quit = 1;
    } else
        out_add(c, "502 5.5.2 Error: command not recognized\r\n");
}

/* returns 0 to keep the connection, -1 to close it */
static int consume(struct conn *c, const char *p, size_t n) {
    size_t i = 0;
    while (i < n && !c->quit) {
        if (c->in_data) {
            for (; i < n; i++) {
                char ch = p[i];
                if (ch == '\n') {
                    if (c->st >= 2) { /* ".\n" or ".\r\n" at line start: end of data */
                        i++;
                        c->in_data = 0;
                        count++;
                        last_time = now_real();
                        out_add(c, "250 2.0.0 Ok: queued\r\n");
                        break;
                    }
                    c->st = 1;
                } else if (c->st == 1 && ch == '.')
                    c->st = 2;
                else if (c->st == 2 && ch == '\r')
                    c->st = 3;
                else
                    c->st = 0;
            }
        } else {
            const char *nl = memchr(p + i, '\n', n - i);
            size_t take = nl ? (size_t)(nl - (p + i)) + 1 : n - i;
            if (c->llen + take >= LINEMAX) return -1; /* absurd line: drop client */
            memcpy(c->line + c->llen, p + i, take);
            c->llen += take;
            i += take;
            if (nl) {
                c->line[c->llen] = 0;
                c->llen = 0;
                command(c, c->line);
            }
        }
    }
    return 0;
}

/* try to send pending output; 0 ok (maybe partial), -1 error */
static int flush_out(struct conn *c) {
    while (c->olen) {
        ssize_t w = send(c->fd, c->out, c->olen, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
            if (errno == EINTR) continue;
            return -1;
        }
        memmove(c->out, c->out + w, c->olen - (size_t)w);
        c->olen -= (size_t)w;
    }
    return 0;
}

static void close_conn(int ep, struct conn *c) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->out);
    free(c);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s ADDR PORT COUNTFILE [MAX_SECONDS]\n", argv[0]);
        return 2;
    }
    double max_s = argc > 4 ? atof(argv[4]) : 3600;
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sig;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    count_fd = open(argv[3], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (count_fd < 0) { perror(argv[3]); return 1; }
    write_count();

    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)atoi(argv[2]));
    if (inet_pton(AF_INET, argv[1], &a.sin_addr) != 1) { fprintf(stderr, "bad address %s\n", argv[1]); return 2; }
    if (bind(ls, (struct sockaddr *)&a, sizeof a) < 0) { perror("bind"); return 1; }
    if (listen(ls, 1024) < 0) { perror("listen"); return 1; }

    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);

    static char buf[RBUF];
    struct epoll_event evs[256];
    double start = now_mono(), last_write = 0;
    unsigned long long written = 0;
    while (!stop_flag) {
        if (now_mono() - start > max_s) { fprintf(stderr, "count_sink: MAX_SECONDS reached\n"); break; }
        int n = epoll_wait(ep, evs, 256, written != count ? 2 : 100);
        if (n < 0 && errno != EINTR) { perror("epoll_wait"); break; }
        for (int k = 0; k < n; k++) {
            struct conn *c = evs[k].data.ptr;
            if (!c) { /* listener */
                for (;;) {
                    int fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0) break;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    c = calloc(1, sizeof *c);
                    if (!c) { close(fd); continue; }
                    c->fd = fd;
                    out_add(c, "220 sink.example.test ESMTP count_sink\r\n");
                    struct epoll_event ce = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ce);
                    if (flush_out(c) < 0) close_conn(ep, c);
                }
                continue;
            }
            int dead = 0;
            if (evs[k].events & EPOLLIN) {
                ssize_t r = recv(c->fd, buf, sizeof buf, 0);
                if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) dead = 1;
                else if (r > 0 && consume(c, buf, (size_t)r) < 0) dead = 1;
            } else if (evs[k].events & (EPOLLHUP | EPOLLERR))
                dead = 1;
            if (!dead && flush_out(c) < 0) dead = 1;
            if (!dead && c->quit && c->olen == 0) dead = 1;
            if (dead) { close_conn(ep, c); continue; }
            if ((c->olen != 0) != c->want_out) { /* rare: the socket buffer was full */
                c->want_out = c->olen != 0;
                struct epoll_event ce = {.events = EPOLLIN | (c->want_out ? EPOLLOUT : 0), .data.ptr = c};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ce);
            }
        }
        double t = now_mono();
        if (written != count && t - last_write >= 0.002) {
            write_count();
            written = count;
            last_write = t;
        }
    }
    write_count();
    return 0;
}
