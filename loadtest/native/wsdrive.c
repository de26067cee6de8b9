/*
 * wsdrive: a WebSocket load driver for livemart in one C file (C11, libc, Linux epoll).
 *
 * Why: a Python generator spends 15-50 us of CPU per WebSocket frame, so on a 2-core
 * machine it saturates its core before the server does and the benchmark measures the
 * generator. Here a frame costs a recv() share and a memmem().
 *
 *   wsdrive listen  --url ws://H:P/ws --conns N --setup TEMPLATE [--every n]
 *                   [--duration S] [--drain S] [--expect TOTAL] [--control]
 *   wsdrive command --url ws://H:P/ws --conns N [--tokens FILE] [--args FILE]
 *                   [--setup TEMPLATE]... --template T --rate R --duration S
 *                   [--drain S] [--ok-file FILE [--ok-conn]] [--key-prefix P]
 *
 * listen: opens N connections (at most --concurrency handshakes at once), runs the setup
 * commands on each (a subscribe, say: each waits for its reply; an `unavailable` reply or
 * a failed connect is retried), prints "wsdrive: ready connected=N failed=M" on stderr,
 * then counts latency markers `[lt:<c|p|m>:<us>]` in every push: exactly, per lane, and
 * records now - stamp for every n-th marker. It stops when --expect markers have arrived,
 * or --duration + --drain after ready. With --control it reads stdin: "expect N" sets
 * the total and ends the run --drain seconds later at most; end of input ends it now.
 *
 * command: the same connections (token i from line i of --tokens), then an open loop:
 * command k is due at start + k/R, goes to connection k mod N and is sent at its due time
 * (or at once if late); its reply is matched by id and its latency runs from the due
 * time, so a stalled server cannot hide behind a stalled generator (no coordinated
 * omission). Placeholders in templates: %ID% (command id, rising per connection), %SEQ%
 * (k for scheduled commands; a global counter for setup ones), %CONN% (connection
 * index), %KEY% (prefix-SEQ, a unique idempotency key), %ARG% (line i of --args),
 * %DUE% (due time, microseconds since the epoch, for markers). Markers in the pushes
 * these connections receive are counted as in listen mode (`delivery_latency_ms`); with
 * --markers-per-ok M the drain also waits for M of them per ok reply (a group message
 * owed to M subscribed members). --ok-file keeps every ok reply, one a line; with --ok-conn
 * each line starts with the index of the connection that got it and a tab, so a caller
 * can tell which user (token line) was granted what.
 *
 * Once running, the loop wakes once per --tick-ms (1 ms) and then reads everything ready
 * and fires everything due: on loopback a wake-up per reply cost more than the reply.
 * Latencies include up to a tick of that (measured; see send_lag_ms).
 *
 * Output: one JSON line on stdout; progress on stderr once a second.
 *
 * The handshake does not verify Sec-WebSocket-Accept (this talks to a server under test,
 * not an adversary); the 101 status and the frames that follow are checked.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SETUP 16
#define MAX_FRAME (16u << 20)   /* a larger server frame is a protocol error here */
#define READ_CHUNK (256u << 10)
#define MAX_HANDSHAKE 16384
#define OPEN_TIMEOUT_S 20.0     /* connect + handshake + setup replies */
#define RETRY_DELAY_S 0.2
#define PING_EVERY_S 15.0       /* the server closes connections silent for too long */
#define START_DELAY_S 0.2       /* command mode: from the last connection ready to k = 0 */
#define STDIN_TAG UINT64_MAX

/* ---- small containers ---- */

typedef struct { char *p; size_t len, cap; } buf_t;
typedef struct { int64_t *v; size_t n, cap; } vec_t;
typedef struct { char name[64]; long long count; } counter_t;
typedef struct { counter_t *items; size_t n, cap; } tally_t;

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("wsdrive: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static void *grow(void *p, size_t size) {
    void *q = realloc(p, size);
    if (q == NULL) die("out of memory");
    return q;
}

static void buf_reserve(buf_t *b, size_t extra) {
    if (b->len + extra <= b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra) cap *= 2;
    b->p = grow(b->p, cap);
    b->cap = cap;
}

static void buf_put(buf_t *b, const void *p, size_t n) {
    buf_reserve(b, n);
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void buf_str(buf_t *b, const char *s) { buf_put(b, s, strlen(s)); }

static void buf_int(buf_t *b, long long x) {
    char tmp[32];
    buf_put(b, tmp, (size_t)snprintf(tmp, sizeof tmp, "%lld", x));
}

static void vec_push(vec_t *a, int64_t x) {
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 4096;
        a->v = grow(a->v, a->cap * sizeof *a->v);
    }
    a->v[a->n++] = x;
}

/* Count `k` under `name` (server codes are identifiers; anything else is replaced). */
static void tally_add(tally_t *t, const char *name, size_t len, long long k) {
    char clean[64];
    size_t n = len < sizeof clean - 1 ? len : sizeof clean - 1;
    for (size_t i = 0; i < n; i++) {
        char ch = name[i];
        int plain = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                    ch == '_' || ch == '-' || ch == '.';
        clean[i] = plain ? ch : '?';
    }
    clean[n] = 0;
    for (size_t i = 0; i < t->n; i++) {
        if (strcmp(t->items[i].name, clean) == 0) {
            t->items[i].count += k;
            return;
        }
    }
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 16;
        t->items = grow(t->items, t->cap * sizeof *t->items);
    }
    memcpy(t->items[t->n].name, clean, n + 1);
    t->items[t->n++].count = k;
}

static void tally(tally_t *t, const char *name) { tally_add(t, name, strlen(name), 1); }

/* ---- clocks and randomness ---- */

static int64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static uint64_t rng_state;

static uint32_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

/* ---- templates ---- */

enum { PH_NONE, PH_ID, PH_SEQ, PH_CONN, PH_KEY, PH_ARG, PH_DUE };
static const char *const PH_NAMES[] = {"", "%ID%", "%SEQ%", "%CONN%", "%KEY%", "%ARG%", "%DUE%"};

typedef struct { const char *lit; size_t len; int ph; } seg_t;
typedef struct { seg_t *segs; size_t n; } tmpl_t;

/* Split a template into literal runs, each followed by a placeholder (or none). */
static tmpl_t tmpl_parse(const char *s) {
    tmpl_t t = {0};
    const char *lit = s;
    for (const char *p = s;; p++) {
        int ph = PH_NONE;
        if (*p == '%') {
            for (int k = PH_ID; k <= PH_DUE; k++) {
                if (strncmp(p, PH_NAMES[k], strlen(PH_NAMES[k])) == 0) ph = k;
            }
        }
        if (ph == PH_NONE && *p) continue;
        t.segs = grow(t.segs, (t.n + 1) * sizeof *t.segs);
        t.segs[t.n++] = (seg_t){lit, (size_t)(p - lit), ph};
        if (!*p) return t;
        p += strlen(PH_NAMES[ph]) - 1;
        lit = p + 1;
    }
}

typedef struct { long long id, seq; int conn; const char *arg; int64_t due; } values_t;

static char key_prefix[64];

static void tmpl_expand(const tmpl_t *t, const values_t *v, buf_t *out) {
    out->len = 0;
    for (size_t i = 0; i < t->n; i++) {
        const seg_t *s = &t->segs[i];
        buf_put(out, s->lit, s->len);
        switch (s->ph) {
        case PH_ID: buf_int(out, v->id); break;
        case PH_SEQ: buf_int(out, v->seq); break;
        case PH_CONN: buf_int(out, v->conn); break;
        case PH_KEY: buf_str(out, key_prefix); buf_put(out, "-", 1); buf_int(out, v->seq); break;
        case PH_ARG: buf_str(out, v->arg); break;
        case PH_DUE: buf_int(out, v->due); break;
        default: break;
        }
    }
}

/* ---- options ---- */

enum { LISTEN, COMMAND };

static struct {
    int mode;
    char host[256], port[16], path[2048];
    const char *subprotocol;
    int conns, concurrency, attempts;
    char **tokens, **args;
    size_t ntokens, nargs;
    tmpl_t setup[MAX_SETUP];
    int nsetup;
    tmpl_t command;
    int has_command;
    double rate, duration, drain, tick_ms;
    long long every, expect, per_ok;
    int control, ok_conn;
    const char *ok_file;
} opt;

/* Lines of a file (no trailing newline or CR); a final empty line is dropped. */
static char **read_lines(const char *path, size_t *count) {
    FILE *f = fopen(path, "r");
    if (f == NULL) die("cannot read %s: %s", path, strerror(errno));
    char **lines = NULL;
    size_t n = 0;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, f)) >= 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        lines = grow(lines, (n + 1) * sizeof *lines);
        lines[n++] = strdup(line);
    }
    free(line);
    fclose(f);
    while (n > 0 && lines[n - 1][0] == 0) free(lines[--n]);
    *count = n;
    return lines;
}

static void parse_url(const char *url) {
    if (strncmp(url, "ws://", 5) != 0) die("--url must start with ws://");
    const char *hp = url + 5, *slash = strchr(hp, '/');
    size_t hostport = slash ? (size_t)(slash - hp) : strlen(hp);
    snprintf(opt.path, sizeof opt.path, "%s", slash ? slash : "/");
    char tmp[sizeof opt.host];
    if (hostport >= sizeof tmp) die("host too long");
    memcpy(tmp, hp, hostport);
    tmp[hostport] = 0;
    char *colon = strrchr(tmp, ':');
    snprintf(opt.port, sizeof opt.port, "%s", colon ? colon + 1 : "80");
    if (colon) *colon = 0;
    snprintf(opt.host, sizeof opt.host, "%s", tmp);
}

static void usage(void) {
    fputs("usage: wsdrive listen|command --url ws://HOST:PORT/ws --conns N [options]\n"
          "  --setup T       command run on each connection before the run (repeatable)\n"
          "  --tokens FILE   access token per connection (line i for connection i)\n"
          "  --args FILE     %ARG% per connection (line i for connection i)\n"
          "  --concurrency C connections opening at once (200)\n"
          "  --subprotocol S (livemart.json)\n"
          "  --duration S    listen: longest time listened after ready; command: sending time\n"
          "  --drain S       time for late deliveries or replies (5)\n"
          "  --tick-ms T     once running, wake at most every T ms (1; 0: at every event)\n"
          "  listen:  --every n (sample every n-th marker, 1), --expect TOTAL, --control\n"
          "  command: --template T, --rate R, --ok-file FILE [--ok-conn], --key-prefix P,\n"
          "           --markers-per-ok M (drain until each ok reply's M pushes arrived too)\n",
          stderr);
    exit(2);
}

static void parse_args(int argc, char **argv) {
    if (argc < 2) usage();
    if (strcmp(argv[1], "listen") == 0) opt.mode = LISTEN;
    else if (strcmp(argv[1], "command") == 0) opt.mode = COMMAND;
    else usage();
    opt.subprotocol = "livemart.json";
    opt.concurrency = 200;
    opt.attempts = 3;
    opt.duration = 10;
    opt.drain = 5;
    opt.every = 1;
    opt.tick_ms = 1;
    const char *url = NULL;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--control") == 0) { opt.control = 1; continue; }
        if (strcmp(a, "--ok-conn") == 0) { opt.ok_conn = 1; continue; }
        if (i + 1 >= argc) usage();
        const char *v = argv[++i];
        if (strcmp(a, "--url") == 0) url = v;
        else if (strcmp(a, "--conns") == 0) opt.conns = atoi(v);
        else if (strcmp(a, "--concurrency") == 0) opt.concurrency = atoi(v);
        else if (strcmp(a, "--subprotocol") == 0) opt.subprotocol = v;
        else if (strcmp(a, "--tokens") == 0) opt.tokens = read_lines(v, &opt.ntokens);
        else if (strcmp(a, "--args") == 0) opt.args = read_lines(v, &opt.nargs);
        else if (strcmp(a, "--setup") == 0) {
            if (opt.nsetup == MAX_SETUP) die("at most %d --setup commands", MAX_SETUP);
            opt.setup[opt.nsetup++] = tmpl_parse(v);
        } else if (strcmp(a, "--template") == 0) {
            opt.command = tmpl_parse(v);
            opt.has_command = 1;
        } else if (strcmp(a, "--rate") == 0) opt.rate = atof(v);
        else if (strcmp(a, "--duration") == 0) opt.duration = atof(v);
        else if (strcmp(a, "--drain") == 0) opt.drain = atof(v);
        else if (strcmp(a, "--every") == 0) opt.every = atoll(v);
        else if (strcmp(a, "--tick-ms") == 0) opt.tick_ms = atof(v);
        else if (strcmp(a, "--expect") == 0) opt.expect = atoll(v);
        else if (strcmp(a, "--markers-per-ok") == 0) opt.per_ok = atoll(v);
        else if (strcmp(a, "--ok-file") == 0) opt.ok_file = v;
        else if (strcmp(a, "--key-prefix") == 0) snprintf(key_prefix, sizeof key_prefix, "%s", v);
        else die("unknown option %s", a);
    }
    if (url == NULL) die("--url is required");
    parse_url(url);
    if (opt.conns < 1) die("--conns must be at least 1");
    if (opt.concurrency < 1) die("--concurrency must be at least 1");
    if (opt.every < 1) die("--every must be at least 1");
    if (opt.tokens && opt.ntokens < (size_t)opt.conns) die("--tokens has %zu lines for %d connections", opt.ntokens, opt.conns);
    if (opt.args && opt.nargs < (size_t)opt.conns) die("--args has %zu lines for %d connections", opt.nargs, opt.conns);
    if (opt.mode == COMMAND && (!opt.has_command || opt.rate <= 0 || opt.duration <= 0))
        die("command mode needs --template, --rate > 0 and --duration > 0");
    if (!key_prefix[0]) snprintf(key_prefix, sizeof key_prefix, "wsd%lx%x", (long)time(NULL), (unsigned)getpid());
}

/* ---- connections ---- */

enum { ST_WAITING, ST_CONNECTING, ST_HANDSHAKE, ST_SETUP, ST_READY, ST_CLOSED, ST_FAILED };

typedef struct {
    int fd, index, st, attempt, setup_step, out_armed, msg_op;
    double deadline;            /* opening: give up then; waiting: retry then */
    double last_ping;
    long long next_id, wait_id, first_cmd, pending;
    buf_t in;                   /* bytes of an incomplete frame (or handshake) */
    buf_t out;                  /* bytes the kernel did not take yet */
    buf_t msg;                  /* a fragmented message being assembled */
    vec_t due;                  /* due time (us) of command first_cmd + i; -1 once replied */
} conn_t;

static conn_t *conns;
static int ep;
static char *rbuf;
static size_t rbuf_cap;
static buf_t scratch;
static FILE *ok_out;
static volatile sig_atomic_t interrupted;

static struct {
    int opening, waiting, connected, failed, retried, stopping;
    long long markers[3], total, frames, pushes, bytes_in;
    long long sent, replied, ok, seq;
    long long in_flight;        /* sent, not replied, connection still open */
    long long orphaned;         /* sent, not replied, connection closed */
    int64_t first_delivery, last_delivery, last_reply;
    int first_waiting;          /* no connection below this index is waiting to open */
    vec_t latency, ack, lag;    /* markers' delivery latency; replies' (command mode); send lag */
    tally_t errors, outcomes;
} st;

static const char *const LANE_NAMES[3] = {"comment", "priority", "message"};

static double now_s(void) { return (double)now_us() / 1e6; }

/* Due time (us) of scheduled command k; no libm, so the build needs no -lm. */
static int64_t due_of(long long k, int64_t start) { return start + (int64_t)((double)k * 1e6 / opt.rate + 0.5); }

static void watch(conn_t *c, int out) {
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.u64 = (uint64_t)c->index};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl: %s", strerror(errno));
    c->out_armed = out;
}

/* Close the socket. Buffers are kept (reset, not freed): a caller may still be reading them. */
static void drop(conn_t *c) {
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    c->in.len = c->out.len = c->msg.len = 0;
    c->msg_op = 0;
}

static int opening_state(const conn_t *c) {
    return c->st == ST_CONNECTING || c->st == ST_HANDSHAKE || c->st == ST_SETUP;
}

/* A connection that failed to open: retry it later when allowed, else count it failed. */
static void fail(conn_t *c, const char *code, int retriable) {
    drop(c);
    st.opening--;
    char name[80];
    if (retriable && c->attempt < opt.attempts && !st.stopping) {
        snprintf(name, sizeof name, "%s_retried", code);
        tally(&st.errors, name);
        st.retried++;
        c->st = ST_WAITING;
        c->deadline = now_s() + RETRY_DELAY_S * c->attempt;
        st.waiting++;
        if (c->index < st.first_waiting) st.first_waiting = c->index;
        return;
    }
    tally(&st.errors, code);
    c->st = ST_FAILED;
    st.failed++;
}

/* A ready connection went away. */
static void lost(conn_t *c, int code) {
    if (!st.stopping) {
        char name[32];
        snprintf(name, sizeof name, "closed_%d", code);
        tally(&st.errors, name);
    }
    st.in_flight -= c->pending;
    st.orphaned += c->pending;
    c->pending = 0;
    drop(c);
    c->st = ST_CLOSED;
}

static void broken(conn_t *c, const char *code) {
    if (opening_state(c)) fail(c, code, 1);
    else lost(c, 1006);
}

/* Write what is buffered; arm EPOLLOUT for the rest. */
static void flush(conn_t *c) {
    size_t done = 0;
    while (done < c->out.len) {
        ssize_t r = send(c->fd, c->out.p + done, c->out.len - done, MSG_NOSIGNAL);
        if (r > 0) { done += (size_t)r; continue; }
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        broken(c, "write_error");
        return;
    }
    memmove(c->out.p, c->out.p + done, c->out.len - done);
    c->out.len -= done;
    if ((c->out.len > 0) != c->out_armed) watch(c, c->out.len > 0);
}

/* One masked frame (clients must mask) appended to the out buffer, then flushed. */
static void send_frame(conn_t *c, int opcode, const char *p, size_t n) {
    if (c->fd < 0) return;
    unsigned char hdr[14];
    size_t h = 0;
    hdr[h++] = (unsigned char)(0x80 | opcode);
    if (n < 126) {
        hdr[h++] = (unsigned char)(0x80 | n);
    } else if (n < 65536) {
        hdr[h++] = 0x80 | 126;
        hdr[h++] = (unsigned char)(n >> 8);
        hdr[h++] = (unsigned char)n;
    } else {
        hdr[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--) hdr[h++] = (unsigned char)(n >> (8 * i));
    }
    uint32_t key = rnd();
    unsigned char *mask = hdr + h;
    memcpy(mask, &key, 4);
    h += 4;
    buf_reserve(&c->out, h + n);
    unsigned char *o = (unsigned char *)c->out.p + c->out.len;
    memcpy(o, hdr, h);
    for (size_t i = 0; i < n; i++) o[h + i] = (unsigned char)p[i] ^ mask[i & 3];
    c->out.len += h + n;
    flush(c);
}

static const char *arg_of(const conn_t *c) { return opt.args ? opt.args[c->index] : ""; }

static void send_setup(conn_t *c) {
    values_t v = {.id = c->next_id++, .seq = st.seq++, .conn = c->index, .arg = arg_of(c), .due = now_us()};
    c->wait_id = v.id;
    tmpl_expand(&opt.setup[c->setup_step], &v, &scratch);
    send_frame(c, 0x1, scratch.p, scratch.len);
}

static void became_ready(conn_t *c) {
    c->st = ST_READY;
    c->first_cmd = c->next_id;
    c->last_ping = now_s();
    st.opening--;
    st.connected++;
}

static void start_setup(conn_t *c) {
    c->st = ST_SETUP;
    c->setup_step = 0;
    if (opt.nsetup == 0) became_ready(c);
    else send_setup(c);
}

static struct addrinfo *target;

static void open_conn(conn_t *c) {
    c->attempt++;
    c->st = ST_CONNECTING;
    c->deadline = now_s() + OPEN_TIMEOUT_S;
    st.opening++;
    c->fd = socket(target->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) { fail(c, "connect_socket", 1); return; }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u64 = (uint64_t)c->index};
    c->out_armed = 1;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl: %s", strerror(errno));
    if (connect(c->fd, target->ai_addr, target->ai_addrlen) < 0 && errno != EINPROGRESS) {
        fail(c, errno == ECONNREFUSED ? "connect_refused" : "connect_error", 1);
    }
}

static void on_connected(conn_t *c) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) { fail(c, err == ECONNREFUSED ? "connect_refused" : "connect_error", 1); return; }
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    unsigned char raw[18] = {0};
    for (int i = 0; i < 16; i++) raw[i] = (unsigned char)rnd();
    char key[25];
    for (int i = 0, j = 0; i < 18; i += 3) {
        uint32_t x = (uint32_t)raw[i] << 16 | (uint32_t)raw[i + 1] << 8 | raw[i + 2];
        for (int s = 18; s >= 0 && j < 22; s -= 6) key[j++] = b64[(x >> s) & 63];
    }
    memcpy(key + 22, "==", 3);
    const char *token = opt.tokens ? opt.tokens[c->index] : "";
    char request[8192];
    int n = snprintf(request, sizeof request,
                     "GET %s%s%s%s HTTP/1.1\r\nHost: %s:%s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: %s\r\n\r\n",
                     opt.path, token[0] ? (strchr(opt.path, '?') ? "&" : "?") : "", token[0] ? "token=" : "",
                     token, opt.host, opt.port, key, opt.subprotocol);
    if (n < 0 || (size_t)n >= sizeof request) die("request too long (token?)");
    c->st = ST_HANDSHAKE;
    buf_put(&c->out, request, (size_t)n);
    flush(c);
}

/* ---- what arrives ---- */

/* Count the markers in a push; sample every n-th (by global position) for latency. */
static void scan_markers(const char *p, size_t n, int64_t now) {
    const char *end = p + n;
    long long before = st.total;
    while (p < end) {
        const char *q = memmem(p, (size_t)(end - p), "[lt:", 4);
        if (q == NULL || end - q < 6) break;
        int lane = q[4] == 'c' ? 0 : q[4] == 'p' ? 1 : q[4] == 'm' ? 2 : -1;
        p = q + 4;
        if (lane < 0 || q[5] != ':') continue;
        st.markers[lane]++;
        if (++st.total % opt.every == 0) {
            int64_t stamp = 0;
            const char *d = q + 6;
            while (d < end && *d >= '0' && *d <= '9') stamp = stamp * 10 + (*d++ - '0');
            if (d < end && *d == ']') vec_push(&st.latency, now - stamp);
        }
    }
    if (st.total > before) {
        if (st.first_delivery == 0) st.first_delivery = now;
        st.last_delivery = now;
    }
}

static void on_command_reply(conn_t *c, long long id, const char *code, size_t code_len, const char *p,
                             size_t n, int64_t now) {
    long long i = id - c->first_cmd;
    if (i < 0 || (size_t)i >= c->due.n) { tally(&st.errors, "unexpected_reply"); return; }
    if (c->due.v[i] < 0) { tally(&st.errors, "duplicate_reply"); return; }
    vec_push(&st.ack, now - c->due.v[i]);
    c->due.v[i] = -1;
    st.last_reply = now;
    c->pending--;
    st.in_flight--;
    st.replied++;
    if (code == NULL) {
        st.ok++;
        tally(&st.outcomes, "ok");
        if (ok_out) {
            if (opt.ok_conn) fprintf(ok_out, "%d\t", c->index);
            fwrite(p, 1, n, ok_out);
            fputc('\n', ok_out);
        }
    } else {
        tally_add(&st.outcomes, code, code_len, 1);
    }
}

static void on_reply(conn_t *c, const char *p, size_t n, int64_t now) {
    const char *q = p + 6, *end = p + n;
    long long id = 0;
    int neg = q < end && *q == '-';
    if (neg) q++;
    while (q < end && *q >= '0' && *q <= '9') id = id * 10 + (*q++ - '0');
    if (neg) id = -id;
    static const char OK[] = ",\"ok\":", ERR[] = ",\"error\":{\"code\":\"";
    const char *code = NULL;
    size_t code_len = 0;
    if ((size_t)(end - q) >= sizeof OK - 1 && memcmp(q, OK, sizeof OK - 1) == 0) {
        code = NULL;
    } else if ((size_t)(end - q) >= sizeof ERR - 1 && memcmp(q, ERR, sizeof ERR - 1) == 0) {
        code = q + sizeof ERR - 1;
        const char *close = memchr(code, '"', (size_t)(end - code));
        code_len = close ? (size_t)(close - code) : 0;
    } else {
        tally(&st.errors, "unexpected_reply");
        return;
    }
    if (c->st == ST_SETUP) {
        if (id != c->wait_id) { tally(&st.errors, "unexpected_reply"); return; }
        if (code != NULL) {
            char name[80];
            snprintf(name, sizeof name, "setup_%.*s", (int)(code_len < 60 ? code_len : 60), code);
            fail(c, name, code_len == 11 && memcmp(code, "unavailable", 11) == 0);
        } else if (++c->setup_step == opt.nsetup) {
            became_ready(c);
        } else {
            send_setup(c);
        }
        return;
    }
    if (opt.mode == COMMAND && c->st == ST_READY) on_command_reply(c, id, code, code_len, p, n, now);
    else tally(&st.errors, "unexpected_reply");
}

static void on_message(conn_t *c, const char *p, size_t n, int64_t now) {
    st.frames++;
    if (n > 6 && memcmp(p, "{\"id\":", 6) == 0) {
        on_reply(c, p, n, now);
    } else {
        st.pushes++;
        scan_markers(p, n, now);
    }
}

static void on_frame(conn_t *c, int fin, int op, char *p, size_t n, int64_t now) {
    switch (op) {
    case 0x9: send_frame(c, 0xA, p, n); break;
    case 0xA: break;
    case 0x8: {
        int code = n >= 2 ? ((unsigned char)p[0] << 8 | (unsigned char)p[1]) : 1005;
        send_frame(c, 0x8, p, n >= 2 ? 2 : 0);
        if (opening_state(c)) {
            char name[32];
            snprintf(name, sizeof name, "setup_closed_%d", code);
            fail(c, name, 0);
        } else {
            lost(c, code);
        }
        break;
    }
    case 0x1:
    case 0x2:
        if (c->msg_op) { broken(c, "bad_frame"); break; }
        if (fin) { on_message(c, p, n, now); break; }
        c->msg.len = 0;
        buf_put(&c->msg, p, n);
        c->msg_op = op;
        break;
    case 0x0:
        if (!c->msg_op) { broken(c, "bad_frame"); break; }
        buf_put(&c->msg, p, n);
        if (fin) {
            c->msg_op = 0;
            on_message(c, c->msg.p, c->msg.len, now);
            c->msg.len = 0;
        }
        break;
    default: broken(c, "bad_frame");
    }
}

/* Handle every complete frame in p[0..n); returns the bytes used. */
static size_t on_frames(conn_t *c, char *p, size_t n, int64_t now) {
    size_t off = 0;
    while (n - off >= 2 && c->fd >= 0) {
        unsigned char *h = (unsigned char *)p + off;
        size_t hl = 2;
        uint64_t len = h[1] & 0x7f;
        if (len == 126) {
            if (n - off < 4) break;
            len = (uint64_t)h[2] << 8 | h[3];
            hl = 4;
        } else if (len == 127) {
            if (n - off < 10) break;
            len = 0;
            for (int i = 0; i < 8; i++) len = len << 8 | h[2 + i];
            hl = 10;
        }
        int masked = h[1] & 0x80;
        if (masked) hl += 4;
        if (len > MAX_FRAME) { broken(c, "frame_too_large"); break; }
        if (n - off < hl + len) break;
        char *payload = p + off + hl;
        if (masked) {
            for (size_t i = 0; i < len; i++) payload[i] ^= (char)h[hl - 4 + (i & 3)];
        }
        on_frame(c, h[0] & 0x80, h[0] & 0x0f, payload, (size_t)len, now);
        off += hl + len;
    }
    return off;
}

/* The 101 answer; returns the bytes it took, 0 when incomplete, -1 when refused. */
static long on_handshake(conn_t *c, const char *p, size_t n) {
    const char *end = memmem(p, n, "\r\n\r\n", 4);
    if (end == NULL) {
        if (n > MAX_HANDSHAKE) { fail(c, "handshake_too_long", 0); return -1; }
        return 0;
    }
    if (n < 12 || memcmp(p, "HTTP/1.1 101", 12) != 0) {
        char name[32];
        snprintf(name, sizeof name, "handshake_%.3s", n >= 12 ? p + 9 : "eof");
        /* 503 (overloaded) is worth another try, like an `unavailable` reply. */
        fail(c, name, n >= 12 && memcmp(p + 9, "503", 3) == 0);
        return -1;
    }
    start_setup(c);
    return end + 4 - p;
}

static void on_readable(conn_t *c) {
    size_t have = c->in.len;
    if (rbuf_cap < have + READ_CHUNK) {
        rbuf_cap = have + READ_CHUNK;
        rbuf = grow(rbuf, rbuf_cap);
    }
    memcpy(rbuf, c->in.p, have);
    ssize_t r = recv(c->fd, rbuf + have, rbuf_cap - have, 0);
    if (r < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) broken(c, "read_error");
        return;
    }
    if (r == 0) {
        if (opening_state(c)) fail(c, c->st == ST_HANDSHAKE ? "handshake_eof" : "setup_eof", 1);
        else lost(c, 1006);
        return;
    }
    st.bytes_in += r;
    size_t n = have + (size_t)r, used = 0;
    int64_t now = now_us();
    if (c->st == ST_HANDSHAKE) {
        long got = on_handshake(c, rbuf, n);
        if (got < 0) return;
        if (got == 0) {
            c->in.len = 0;
            buf_put(&c->in, rbuf, n);
            return;
        }
        used = (size_t)got;
    }
    used += on_frames(c, rbuf + used, n - used, now);
    if (c->fd < 0) return;
    c->in.len = 0;
    buf_put(&c->in, rbuf + used, n - used);
}

static void on_event(conn_t *c, uint32_t events) {
    if (c->fd < 0) return;
    if (c->st == ST_CONNECTING) {
        if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) on_connected(c);
        return;
    }
    if (events & EPOLLOUT) flush(c);
    if (c->fd >= 0 && (events & (EPOLLIN | EPOLLERR | EPOLLHUP))) on_readable(c);
}

/* ---- the run ---- */

static void fire(long long k, int64_t start, conn_t **ready, int nready) {
    int64_t due = due_of(k, start);
    conn_t *c = ready[k % nready];
    if (c->st != ST_READY) { tally(&st.errors, "no_connection"); return; }
    values_t v = {.id = c->next_id++, .seq = k, .conn = c->index, .arg = arg_of(c), .due = due};
    tmpl_expand(&opt.command, &v, &scratch);
    vec_push(&c->due, due);
    c->pending++;
    st.in_flight++;
    st.sent++;
    vec_push(&st.lag, now_us() - due);
    send_frame(c, 0x1, scratch.p, scratch.len);
}

static void ping_quiet(double now) {
    for (int i = 0; i < opt.conns; i++) {
        conn_t *c = &conns[i];
        if (c->st == ST_READY && now - c->last_ping >= PING_EVERY_S) {
            c->last_ping = now;
            send_frame(c, 0x9, "", 0);
        }
    }
}

/* Opening connections past their deadline fail (checked once a second). */
static void expire_opening(double now) {
    for (int i = 0; i < opt.conns; i++) {
        conn_t *c = &conns[i];
        if (opening_state(c) && now > c->deadline) {
            fail(c, c->st == ST_CONNECTING ? "connect_timeout"
                    : c->st == ST_HANDSHAKE ? "handshake_timeout" : "setup_timeout", 1);
        }
    }
}

/* Start waiting connections whose time came, while fewer than --concurrency are opening. */
static void start_waiting(double now) {
    int seen_waiting = 0;
    for (int i = st.first_waiting; i < opt.conns && st.waiting > 0 && st.opening < opt.concurrency; i++) {
        conn_t *c = &conns[i];
        if (c->st != ST_WAITING) {
            if (!seen_waiting) st.first_waiting = i + 1;
            continue;
        }
        if (now >= c->deadline) {
            st.waiting--;
            open_conn(c);
            if (!seen_waiting) st.first_waiting = i + 1;
        } else {
            seen_waiting = 1;
        }
    }
}

static void read_control(double *end) {
    char line[256];
    ssize_t r = read(STDIN_FILENO, line, sizeof line - 1);
    if (r <= 0) {
        *end = 0;
        epoll_ctl(ep, EPOLL_CTL_DEL, STDIN_FILENO, NULL);
        return;
    }
    line[r] = 0;
    for (char *s = strtok(line, "\n"); s; s = strtok(NULL, "\n")) {
        long long total;
        if (sscanf(s, "expect %lld", &total) == 1) {
            opt.expect = total;
            double stop = now_s() + opt.drain;
            if (stop < *end) *end = stop;
        }
    }
}

static int cmp_i64(const void *x, const void *y) {
    int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
    return (a > b) - (a < b);
}

/* Percentiles of microsecond samples, printed in ms: exact, from the sorted samples. */
static void print_ms(const char *name, vec_t *a) {
    printf("\"%s\":{", name);
    if (a->n == 0) {
        printf("\"p50\":null,\"p99\":null,\"p999\":null,\"max\":null}");
        return;
    }
    qsort(a->v, a->n, sizeof *a->v, cmp_i64);
    const double qs[] = {0.5, 0.99, 0.999};
    const char *names[] = {"p50", "p99", "p999"};
    for (int i = 0; i < 3; i++) {
        size_t at = (size_t)(qs[i] * (double)a->n); /* the ceil(q n)-th smallest, 0-based */
        if ((double)at == qs[i] * (double)a->n && at > 0) at--;
        printf("\"%s\":%.3f,", names[i], (double)a->v[at] / 1000.0);
    }
    printf("\"max\":%.3f}", (double)a->v[a->n - 1] / 1000.0);
}

static void print_tally(const char *name, const tally_t *t) {
    printf("\"%s\":{", name);
    for (size_t i = 0; i < t->n; i++) printf("%s\"%s\":%lld", i ? "," : "", t->items[i].name, t->items[i].count);
    printf("}");
}

static void on_signal(int sig) {
    (void)sig;
    interrupted = 1;
}

int main(int argc, char **argv) {
    parse_args(argc, argv);
    rng_state = (uint64_t)now_us() ^ ((uint64_t)getpid() << 32) ^ 0x9E3779B97F4A7C15ull;
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    struct rlimit lim;
    if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
        lim.rlim_cur = lim.rlim_max;
        setrlimit(RLIMIT_NOFILE, &lim);
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int gai = getaddrinfo(opt.host, opt.port, &hints, &target);
    if (gai != 0) die("cannot resolve %s: %s", opt.host, gai_strerror(gai));
    if (opt.ok_file && (ok_out = fopen(opt.ok_file, "w")) == NULL) die("cannot write %s", opt.ok_file);
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1: %s", strerror(errno));
    if (opt.control) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = STDIN_TAG};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, STDIN_FILENO, &ev) < 0) die("--control needs a pipe on stdin");
    }
    conns = calloc((size_t)opt.conns, sizeof *conns);
    if (conns == NULL) die("out of memory");
    for (int i = 0; i < opt.conns; i++) {
        conns[i].fd = -1;
        conns[i].index = i;
        conns[i].st = ST_WAITING;
        conns[i].next_id = 1;
    }
    st.waiting = opt.conns;

    enum { OPENING, RUNNING, DRAINING, DONE } phase = OPENING;
    double began = now_s(), ready_at = 0, end = 0, next_tick = began + 1, cpu_ready = 0, cpu_sent = 0;
    double sent_at = 0, last_wake = 0;
    int64_t start = 0;
    long long total = opt.mode == COMMAND ? (long long)(opt.rate * opt.duration + 0.5) : 0, next_k = 0;
    conn_t **ready = NULL;
    int nready = 0;
    struct epoll_event events[1024];
    start_waiting(began);

    while (phase != DONE) {
        double now = now_s();
        if (interrupted) {
            if (phase == OPENING) tally(&st.errors, "interrupted");
            break;
        }
        if (phase == OPENING) {
            start_waiting(now);
            if (st.opening == 0 && st.waiting == 0) {
                ready_at = now;
                cpu_ready = cpu_s();
                fprintf(stderr, "wsdrive: ready connected=%d failed=%d\n", st.connected, st.failed);
                fflush(stderr);
                ready = malloc(sizeof *ready * (size_t)(st.connected ? st.connected : 1));
                for (int i = 0; i < opt.conns; i++)
                    if (conns[i].st == ST_READY) ready[nready++] = &conns[i];
                phase = RUNNING;
                end = now + opt.duration + opt.drain;
                start = (int64_t)((now + START_DELAY_S) * 1e6);
                if (opt.mode == COMMAND && nready == 0) phase = DONE;
            }
        }
        if (phase == RUNNING && opt.mode == COMMAND) {
            int64_t t = now_us();
            while (next_k < total && due_of(next_k, start) <= t)
                fire(next_k++, start, ready, nready);
            if (next_k == total) {
                sent_at = now_s();
                cpu_sent = cpu_s();
                end = sent_at + opt.drain;
                phase = DRAINING;
            }
        }
        if (phase == DRAINING && st.in_flight == 0 && st.total >= st.ok * opt.per_ok) phase = DONE;
        if (phase == RUNNING && opt.mode == LISTEN && opt.expect > 0 && st.total >= opt.expect) phase = DONE;
        if (phase != OPENING && now >= end) phase = DONE;
        if (phase == DONE) break;
        if (now >= next_tick) {
            next_tick += 1;
            if (phase == OPENING) expire_opening(now);
            ping_quiet(now);
            if (opt.mode == COMMAND)
                fprintf(stderr, "wsdrive: %.0f s open=%d ready=%d sent=%lld replied=%lld in_flight=%lld\n",
                        now - began, st.opening, st.connected, st.sent, st.replied, st.in_flight);
            else
                fprintf(stderr, "wsdrive: %.0f s open=%d ready=%d received=%lld\n", now - began, st.opening,
                        st.connected, st.total);
        }
        double wait = next_tick - now_s();
        if (phase == OPENING && wait > 0.05) wait = 0.05;
        if (phase == RUNNING && opt.mode == COMMAND && next_k < total) {
            double due = (double)start / 1e6 + (double)next_k / opt.rate - now_s();
            if (due < wait) wait = due;
        }
        if (phase != OPENING && end - now_s() < wait) wait = end - now_s();
        int timeout = wait <= 0 ? 0 : (int)(wait * 1000) + 1; /* never wake before a due time */
        if (phase != OPENING && opt.tick_ms > 0) {
            /* Sleep to the next tick, then take whatever is ready and fire whatever is due:
             * one wake-up per tick instead of one per reply or command, which is most of a
             * loopback client's CPU. Sends and reads are up to a tick late, and counted so. */
            double nap = last_wake + opt.tick_ms / 1000 - now_s();
            if (nap > end - now_s()) nap = end - now_s();
            if (nap > 0) {
                struct timespec ts = {.tv_sec = (time_t)nap, .tv_nsec = (long)((nap - (double)(time_t)nap) * 1e9)};
                nanosleep(&ts, NULL);
            }
            last_wake = now_s();
            timeout = 0;
        }
        int n;
        do {
            n = epoll_wait(ep, events, 1024, timeout);
            if (n < 0 && errno != EINTR) die("epoll_wait: %s", strerror(errno));
            for (int i = 0; i < n; i++) {
                if (events[i].data.u64 == STDIN_TAG) read_control(&end);
                else on_event(&conns[events[i].data.u64], events[i].events);
            }
        } while (n == 1024 && timeout == 0);
    }

    double finished = now_s(), cpu_end = cpu_s();
    long long timed_out = st.in_flight, orphaned = st.orphaned;
    st.stopping = 1;
    for (int i = 0; i < opt.conns; i++) {
        conn_t *c = &conns[i];
        if (c->fd < 0) continue;
        if (c->st == ST_READY) {
            c->out.len = 0;
            send_frame(c, 0x8, "\x03\xe8", 2); /* 1000, best effort: no waiting for the answer */
        }
        drop(c);
    }
    if (ok_out) fclose(ok_out);

    printf("{\"mode\":\"%s\",\"url\":\"ws://%s:%s\"", opt.mode == COMMAND ? "command" : "listen", opt.host,
           opt.port);
    double open_s = (ready_at ? ready_at : finished) - began;
    printf(",\"connections\":{\"attempted\":%d,\"connected\":%d,\"failed\":%d,\"retried\":%d,\"open_s\":%.3f,"
           "\"per_s\":%.1f}",
           opt.conns, st.connected, st.failed, st.retried, open_s, open_s > 0 ? st.connected / open_s : 0.0);
    printf(",\"ready_at\":%.6f,\"end_at\":%.6f", ready_at, finished);
    printf(",\"delivered\":%lld,\"lanes\":{\"%s\":%lld,\"%s\":%lld,\"%s\":%lld}", st.total, LANE_NAMES[0],
           st.markers[0], LANE_NAMES[1], st.markers[1], LANE_NAMES[2], st.markers[2]);
    printf(",\"first_delivery_at\":%.6f,\"last_delivery_at\":%.6f", st.first_delivery / 1e6,
           st.last_delivery / 1e6);
    printf(",\"frames\":%lld,\"pushes\":%lld,\"bytes_in\":%lld", st.frames, st.pushes, st.bytes_in);
    if (opt.mode == LISTEN) {
        printf(",\"expect\":%lld,", opt.expect);
        print_ms("latency_ms", &st.latency);
        printf(",\"latency_sample\":{\"every\":%lld,\"samples\":%zu}", opt.every, st.latency.n);
        printf(",\"cpu_s\":%.3f,\"cpu_s_listening\":%.3f", cpu_end, ready_at ? cpu_end - cpu_ready : 0.0);
    } else {
        double send_s = sent_at ? sent_at - (double)start / 1e6 : 0;
        printf(",\"start_at\":%.6f,\"rate\":%.3f,\"scheduled\":%lld,\"sent\":%lld,\"replied\":%lld,"
               "\"timed_out\":%lld", (double)start / 1e6, opt.rate, total, st.sent, st.replied, timed_out);
        printf(",\"unanswered_closed\":%lld", orphaned);
        /* Over the send window, or until the last reply when replies trail behind. */
        double trail = (double)(st.last_reply - start) / 1e6, window = trail > send_s ? trail : send_s;
        printf(",\"duration_s\":%.3f,\"replied_per_s\":%.1f,", send_s, window > 0 ? st.replied / window : 0.0);
        print_tally("outcomes", &st.outcomes);
        printf(",");
        print_ms("latency_ms", &st.ack);
        printf(",");
        print_ms("delivery_latency_ms", &st.latency);
        printf(",\"delivery_sample\":{\"every\":%lld,\"samples\":%zu},", opt.every, st.latency.n);
        print_ms("send_lag_ms", &st.lag);
        printf(",\"cpu_s\":%.3f,\"cpu_s_sending\":%.3f", cpu_end,
               sent_at ? cpu_sent - cpu_ready : cpu_end - cpu_ready);
    }
    printf(",");
    print_tally("errors", &st.errors);
    printf("}\n");
    fflush(stdout);
    freeaddrinfo(target);
    return 0;
}
