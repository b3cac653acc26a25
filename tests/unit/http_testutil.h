/* http_testutil.h - tiny libcurl client and a scripted raw-socket HTTP server on 127.0.0.1 for
 * the serve/judge tests. Everything is loopback-only with bounded waits. */
#ifndef SAFETUNE_HTTP_TESTUTIL_H
#define SAFETUNE_HTTP_TESTUTIL_H

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct {
    char *p;
    size_t n;
} http_buf;

static inline size_t http_buf_write(char *ptr, size_t size, size_t nmemb, void *ud) {
    http_buf *b = ud;
    size_t n = size * nmemb;
    char *q = realloc(b->p, b->n + n + 1);
    if (!q) return 0;
    b->p = q;
    memcpy(b->p + b->n, ptr, n);
    b->n += n;
    b->p[b->n] = '\0';
    return n;
}

/* One HTTP request; returns the status code (0 on transport error). body and hdrs are heap strings (free them). */
static inline long http_do(const char *method, int port, const char *path, const char *data, char **body, char **hdrs) {
    CURL *c = curl_easy_init();
    char url[512];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    http_buf b = {0}, h = {0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (data) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, data);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(data));
    }
    struct curl_slist *hl = curl_slist_append(NULL, "Content-Type: application/json");
    hl = curl_slist_append(hl, "Expect:");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, http_buf_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, http_buf_write);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &h);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    long code = 0;
    if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_slist_free_all(hl);
    curl_easy_cleanup(c);
    if (body) *body = b.p ? b.p : strdup("");
    else free(b.p);
    if (hdrs) *hdrs = h.p ? h.p : strdup("");
    else free(h.p);
    return code;
}

/* ---- scripted raw server ---- */
typedef enum {
    RAW_HANG,      /* read the request, never answer (until stopped) */
    RAW_CLOSE,     /* read the request, close without a byte */
    RAW_REPLY      /* send the scripted raw HTTP response text */
} raw_mode;

typedef struct {
    raw_mode modes[8];
    const char *replies[8];
    int nscript;          /* connection i uses script[min(i, nscript-1)] */
    int fd, port;
    atomic_int stop;
    atomic_int conns;     /* connections accepted */
    pthread_t th;
} raw_server;

static inline void raw_read_request(int cfd) {
    char buf[65536];
    size_t n = 0;
    long want = -1;
    for (int it = 0; it < 200; it++) { /* <= 200 x 50 ms */
        struct pollfd p = {cfd, POLLIN, 0};
        if (poll(&p, 1, 50) <= 0) continue;
        ssize_t r = recv(cfd, buf + n, sizeof buf - 1 - n, 0);
        if (r <= 0) return;
        n += (size_t)r;
        buf[n] = '\0';
        char *he = strstr(buf, "\r\n\r\n");
        if (he) {
            if (want < 0) {
                char *cl = strcasestr(buf, "Content-Length:");
                want = (long)(he + 4 - buf) + (cl ? atol(cl + 15) : 0);
            }
            if ((long)n >= want) return;
        }
        if (n >= sizeof buf - 1) return;
    }
}

static inline void *raw_main(void *arg) {
    raw_server *s = arg;
    while (!s->stop) {
        struct pollfd p = {s->fd, POLLIN, 0};
        if (poll(&p, 1, 50) <= 0) continue;
        int cfd = accept(s->fd, NULL, NULL);
        if (cfd < 0) continue;
        int i = s->conns++;
        if (i >= s->nscript) i = s->nscript - 1;
        raw_read_request(cfd);
        if (s->modes[i] == RAW_HANG) {
            while (!s->stop) {
                struct pollfd q = {cfd, POLLIN, 0};
                if (poll(&q, 1, 50) > 0) {
                    char tmp[256];
                    if (recv(cfd, tmp, sizeof tmp, 0) <= 0) break; /* client gave up */
                }
            }
        } else if (s->modes[i] == RAW_REPLY) {
            const char *r = s->replies[i];
            ssize_t w = send(cfd, r, strlen(r), MSG_NOSIGNAL);
            (void)w;
        }
        close(cfd);
    }
    return NULL;
}

static inline int raw_listen(int *port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 16) != 0) {
        close(fd);
        return -1;
    }
    socklen_t l = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &l);
    *port = ntohs(a.sin_port);
    return fd;
}

static inline int raw_start(raw_server *s) {
    s->fd = raw_listen(&s->port);
    if (s->fd < 0) return -1;
    s->stop = 0;
    s->conns = 0;
    return pthread_create(&s->th, NULL, raw_main, s);
}

static inline void raw_stop(raw_server *s) {
    s->stop = 1;
    pthread_join(s->th, NULL);
    close(s->fd);
}

/* A port with nothing listening: bind, read the port, close. */
static inline int dead_port(void) {
    int port = 0;
    int fd = raw_listen(&port);
    close(fd);
    return port;
}

#endif
