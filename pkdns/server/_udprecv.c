/* pkdns.server._udprecv: the DNS listening socket's reads and writes, in batches, in C.
 *
 * Why by hand: under a flood from one address the daemon must shed the flood's datagrams
 * faster than they arrive, or the socket's receive queue overflows and the kernel drops other
 * clients' queries with the flood's (issue: ~340 k pps from one address left a victim on another
 * with 43.5 % answered while unbound, with a per-IP limit, kept 100 %). Through the event loop
 * every datagram costs a loop callback, a bytes object, an address tuple with a fresh string and
 * a Python call before the rate limit can say "drop". Here recvmmsg(2) reads up to 32 datagrams
 * per system call, and datagrams from an address the rate limiter has just limited are dropped
 * right after the read, before any Python object exists (block(): the limiter says for how long;
 * one in PASS_EVERY still goes up, so the limiter keeps its TC=1 "slip" answers and its counts).
 * Everything else is handed to Python as (bytes, address) pairs like the event loop would.
 * Replies go out with sendto(2) on the same descriptor. Linux only (recvmmsg). The logic stays in
 * Python (pkdns/server/udp.py, which falls back to the event loop's transport without this).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define BATCH 32
#define MAX_DATAGRAM 65536
#define MAX_BLOCKS 64
#define PASS_EVERY 32

typedef union {
    struct sockaddr sa;
    struct sockaddr_in v4;
    struct sockaddr_in6 v6;
    struct sockaddr_storage any;
} address;

/* Only touched with the GIL held. The buffers are large so that no query is ever cut; pages
 * the kernel never writes to are never committed. */
static char buffers[BATCH][MAX_DATAGRAM];
static address sources[BATCH];
static struct iovec iovecs[BATCH];
static struct mmsghdr messages[BATCH];

typedef struct {
    unsigned char key[8];   /* IPv4 address, or the IPv6 /64 (the limiter's key) */
    int family;
    double until;           /* CLOCK_MONOTONIC seconds */
    unsigned long seen;
} block_entry;

static block_entry blocks[MAX_BLOCKS];
static int nblocks;
static unsigned long long filtered;

static PyObject *last_address;      /* the previous datagram's address tuple, reused */
static address last_source;
static socklen_t last_len;

static double
monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The limiter's key of a source: family and 4 (IPv4, also v4-mapped IPv6) or 8 bytes. */
static int
key_of(const address *a, unsigned char key[8])
{
    memset(key, 0, 8);
    if (a->sa.sa_family == AF_INET) {
        memcpy(key, &a->v4.sin_addr, 4);
        return AF_INET;
    }
    const unsigned char *b = a->v6.sin6_addr.s6_addr;
    if (IN6_IS_ADDR_V4MAPPED(&a->v6.sin6_addr)) {
        memcpy(key, b + 12, 4);
        return AF_INET;
    }
    memcpy(key, b, 8);
    return AF_INET6;
}

/* Drop this datagram? (Its source is blocked and it is not the one in PASS_EVERY.) */
static int
blocked(const address *a, double now)
{
    if (nblocks == 0)
        return 0;
    unsigned char key[8];
    int family = key_of(a, key);
    for (int i = 0; i < nblocks; i++) {
        block_entry *e = &blocks[i];
        if (e->family == family && e->until > now && memcmp(e->key, key, 8) == 0)
            return ++e->seen % PASS_EVERY != 0;
    }
    return 0;
}

static PyObject *
address_tuple(const address *a, socklen_t len)
{
    if (last_address != NULL && len == last_len && memcmp(a, &last_source, len) == 0) {
        Py_INCREF(last_address);
        return last_address;
    }
    char text[INET6_ADDRSTRLEN];
    PyObject *tuple;
    if (a->sa.sa_family == AF_INET) {
        inet_ntop(AF_INET, &a->v4.sin_addr, text, sizeof text);
        tuple = Py_BuildValue("(si)", text, ntohs(a->v4.sin_port));
    } else {
        inet_ntop(AF_INET6, &a->v6.sin6_addr, text, sizeof text);
        tuple = Py_BuildValue("(siII)", text, ntohs(a->v6.sin6_port),
                              ntohl(a->v6.sin6_flowinfo), a->v6.sin6_scope_id);
    }
    if (tuple == NULL)
        return NULL;
    Py_XDECREF(last_address);
    Py_INCREF(tuple);
    last_address = tuple;
    memcpy(&last_source, a, len);
    last_len = len;
    return tuple;
}

PyDoc_STRVAR(recv_batch_doc,
"recv_batch(fd) -> list[tuple[bytes, tuple]] | None\n\n"
"Up to 32 datagrams waiting on the non-blocking socket fd, as (data, address) pairs like\n"
"asyncio's datagram_received gets them; None when nothing is waiting. Datagrams from a blocked\n"
"source (block()) are dropped and counted (take_filtered()). Socket errors are ignored\n"
"(they belong to earlier replies to clients that went away).");

static PyObject *
recv_batch(PyObject *module, PyObject *arg)
{
    long fd = PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    for (int i = 0; i < BATCH; i++) {
        iovecs[i].iov_base = buffers[i];
        iovecs[i].iov_len = MAX_DATAGRAM;
        memset(&messages[i].msg_hdr, 0, sizeof messages[i].msg_hdr);
        messages[i].msg_hdr.msg_name = &sources[i];
        messages[i].msg_hdr.msg_namelen = sizeof sources[i];
        messages[i].msg_hdr.msg_iov = &iovecs[i];
        messages[i].msg_hdr.msg_iovlen = 1;
    }
    int n;
    do {
        n = recvmmsg((int)fd, messages, BATCH, MSG_DONTWAIT, NULL);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        Py_RETURN_NONE;
    if (n <= 0)                         /* a pending error of an earlier reply: go on */
        return PyList_New(0);
    double now = nblocks ? monotonic() : 0.0;
    if (nblocks) {
        int live = 0;
        for (int i = 0; i < nblocks && !live; i++)
            live = blocks[i].until > now;
        if (!live)
            nblocks = 0;                /* every block ended: no per-datagram check */
    }
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    for (int i = 0; i < n; i++) {
        if (blocked(&sources[i], now)) {
            filtered++;
            continue;
        }
        PyObject *data = PyBytes_FromStringAndSize(buffers[i], messages[i].msg_len);
        PyObject *addr = data ? address_tuple(&sources[i], messages[i].msg_hdr.msg_namelen)
                              : NULL;
        PyObject *pair = addr ? PyTuple_Pack(2, data, addr) : NULL;
        Py_XDECREF(data);
        Py_XDECREF(addr);
        if (pair == NULL || PyList_Append(out, pair) < 0) {
            Py_XDECREF(pair);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(pair);
    }
    return out;
}

/* An address tuple (host, port[, flowinfo, scope_id]) as a sockaddr. */
static int
parse_address(PyObject *addr, address *a, socklen_t *len)
{
    const char *host;
    int port;
    unsigned int flowinfo = 0, scope = 0;
    if (!PyTuple_Check(addr)
            || !PyArg_ParseTuple(addr, "si|II", &host, &port, &flowinfo, &scope))
        return -1;
    memset(a, 0, sizeof *a);
    if (inet_pton(AF_INET, host, &a->v4.sin_addr) == 1) {
        a->v4.sin_family = AF_INET;
        a->v4.sin_port = htons((uint16_t)port);
        *len = sizeof a->v4;
        return 0;
    }
    char text[64];
    strncpy(text, host, sizeof text - 1);
    text[sizeof text - 1] = '\0';
    char *pct = strchr(text, '%');
    if (pct != NULL) {
        *pct++ = '\0';
        if (scope == 0)
            scope = if_nametoindex(pct);
    }
    if (inet_pton(AF_INET6, text, &a->v6.sin6_addr) != 1) {
        PyErr_Format(PyExc_ValueError, "not an IP address: %s", host);
        return -1;
    }
    a->v6.sin6_family = AF_INET6;
    a->v6.sin6_port = htons((uint16_t)port);
    a->v6.sin6_flowinfo = htonl(flowinfo);
    a->v6.sin6_scope_id = scope;
    *len = sizeof a->v6;
    return 0;
}

PyDoc_STRVAR(send_doc,
"send(fd, data, address)\n\n"
"sendto(2) of data to address (a tuple as recv_batch gives). A full send buffer or a socket\n"
"error drops the reply, as a router would drop the datagram: the client asks again.");

static PyObject *
send_to(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "send(fd, data: bytes, address)");
        return NULL;
    }
    long fd = PyLong_AsLong(args[0]);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    address a;
    socklen_t len;
    if (args[2] == last_address) {
        a = last_source;
        len = last_len;
    } else if (parse_address(args[2], &a, &len) < 0) {
        return NULL;
    }
    ssize_t sent;
    do {
        sent = sendto((int)fd, PyBytes_AS_STRING(args[1]), (size_t)PyBytes_GET_SIZE(args[1]),
                      MSG_DONTWAIT, &a.sa, len);
    } while (sent < 0 && errno == EINTR);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(block_doc,
"block(ip, seconds)\n\n"
"Drop datagrams from ip (an IPv6 address: its /64) for the next seconds, but one in 32.\n"
"At most 64 sources are blocked at once; a new one replaces the one that ends first.");

static PyObject *
block(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    const char *host;
    double seconds;
    if (nargs != 2 || (host = PyUnicode_AsUTF8(args[0])) == NULL
            || ((seconds = PyFloat_AsDouble(args[1])) == -1.0 && PyErr_Occurred())) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "block(ip: str, seconds: float)");
        return NULL;
    }
    PyObject *tuple = Py_BuildValue("(si)", host, 0);
    if (tuple == NULL)
        return NULL;
    address a;
    socklen_t len;
    int bad = parse_address(tuple, &a, &len);
    Py_DECREF(tuple);
    if (bad < 0)
        return NULL;
    unsigned char key[8];
    int family = key_of(&a, key);
    double now = monotonic();
    int slot = -1, free_slot = -1, oldest = 0;
    for (int i = 0; i < nblocks; i++) {
        if (blocks[i].family == family && memcmp(blocks[i].key, key, 8) == 0) {
            slot = i;
            break;
        }
        if (free_slot < 0 && blocks[i].until <= now)
            free_slot = i;
        if (blocks[i].until < blocks[oldest].until)
            oldest = i;
    }
    if (slot < 0) {
        slot = free_slot >= 0 ? free_slot : nblocks < MAX_BLOCKS ? nblocks++ : oldest;
        blocks[slot].seen = 0;
    }
    block_entry *e = &blocks[slot];
    e->family = family;
    memcpy(e->key, key, 8);
    e->until = now + seconds;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(take_filtered_doc,
"take_filtered() -> int\n\nDatagrams dropped by block() since the last call.");

static PyObject *
take_filtered(PyObject *module, PyObject *unused)
{
    unsigned long long n = filtered;
    filtered = 0;
    return PyLong_FromUnsignedLongLong(n);
}

static PyMethodDef methods[] = {
    {"recv_batch", recv_batch, METH_O, recv_batch_doc},
    {"send", (PyCFunction)(void (*)(void))send_to, METH_FASTCALL, send_doc},
    {"block", (PyCFunction)(void (*)(void))block, METH_FASTCALL, block_doc},
    {"take_filtered", take_filtered, METH_NOARGS, take_filtered_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "pkdns.server._udprecv",
    "The DNS listening socket's batched reads and writes, in C (see the source's header).",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__udprecv(void)
{
    return PyModule_Create(&module_def);
}
