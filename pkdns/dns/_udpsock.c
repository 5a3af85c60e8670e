/* pkdns.dns._udpsock: the per-query upstream socket calls of a cache miss, in C.
 *
 * Why by hand: RFC 5452 wants a fresh socket (a random source port) for every upstream
 * query, so each cache miss makes, connects, watches, reads and closes one. Through the
 * socket module that is a Python socket object, argument parsing for every call and a GIL
 * release/re-take around every system call -- measured (callgrind, bench/dnsbench/ircount.sh)
 * as about a sixth of the user-space work of a miss, more than the system calls themselves
 * cost in user space. No library offers "socket + connect + epoll_ctl + send" as one call on
 * a plain descriptor. These calls never block (the socket is non-blocking, epoll is polled
 * with timeout 0), so they keep the GIL. The logic around them stays in Python
 * (pkdns/dns/sockpoll.py, which also holds the plain-Python equivalents used when this module
 * is not built). Linux only (epoll).
 *
 * mix_case is here for the same reason: 0x20 (random letter case in every upstream query
 * name) is a loop over the name's bytes with one random bit per letter; done in Python as
 * big-integer arithmetic it cost about 4,000 instructions per miss, here about a hundred.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_DATAGRAM 65535
#define MAX_EVENTS 256

static char datagram[MAX_DATAGRAM];   /* only touched with the GIL held */

typedef union {
    struct sockaddr sa;
    struct sockaddr_in v4;
    struct sockaddr_in6 v6;
} address;

static int
int_arg(PyObject *obj, long low, long high, const char *what, long *out)
{
    long value = PyLong_AsLong(obj);
    if (value == -1 && PyErr_Occurred())
        return -1;
    if (value < low || value > high) {
        PyErr_Format(PyExc_ValueError, "%s out of range: %ld", what, value);
        return -1;
    }
    *out = value;
    return 0;
}

/* An IP literal (IPv6 may carry a %scope: an interface name or number) and a port. */
static int
parse_address(PyObject *host_obj, long port, address *addr, socklen_t *len)
{
    Py_ssize_t size;
    const char *host = PyUnicode_AsUTF8AndSize(host_obj, &size);
    if (host == NULL)
        return -1;
    if (strlen(host) != (size_t)size)
        goto bad;
    memset(addr, 0, sizeof *addr);
    if (memchr(host, ':', (size_t)size) == NULL) {
        addr->v4.sin_family = AF_INET;
        addr->v4.sin_port = htons((uint16_t)port);
        *len = sizeof addr->v4;
        if (inet_pton(AF_INET, host, &addr->v4.sin_addr) == 1)
            return 0;
    } else if (size < 64) {
        char text[64];
        memcpy(text, host, (size_t)size + 1);
        char *scope = strchr(text, '%');
        if (scope != NULL) {
            *scope++ = '\0';
            char *end;
            unsigned long index = strtoul(scope, &end, 10);
            addr->v6.sin6_scope_id = (*scope && !*end) ? (uint32_t)index
                                                        : if_nametoindex(scope);
        }
        addr->v6.sin6_family = AF_INET6;
        addr->v6.sin6_port = htons((uint16_t)port);
        *len = sizeof addr->v6;
        if (inet_pton(AF_INET6, text, &addr->v6.sin6_addr) == 1
                && (scope == NULL || addr->v6.sin6_scope_id != 0))
            return 0;
    }
bad:                  /* as the socket module would fail on it: an OSError */
    errno = EINVAL;
    PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, host_obj);
    return -1;
}

static PyObject *
errno_error(int fd)
{
    int saved = errno;
    if (fd >= 0)
        close(fd);
    errno = saved;
    return PyErr_SetFromErrno(PyExc_OSError);
}

PyDoc_STRVAR(open_send_doc,
"open_send(epfd, host, port, packet) -> fd\n\n"
"A new non-blocking UDP socket connected to (host, port) -- so bound to a random port the\n"
"kernel picks -- added to epoll set epfd (EPOLLIN, data = fd), with packet sent on it.\n"
"Raises OSError (ConnectionRefusedError, ...) with nothing left open.");

static PyObject *
open_send(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    long epfd, port;
    address addr;
    socklen_t len;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "open_send(epfd, host, port, packet)");
        return NULL;
    }
    if (int_arg(args[0], 0, INT_MAX, "epfd", &epfd) < 0
            || int_arg(args[2], 0, 65535, "port", &port) < 0
            || parse_address(args[1], port, &addr, &len) < 0)
        return NULL;
    if (!PyBytes_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "packet must be bytes");
        return NULL;
    }
    int fd = socket(addr.sa.sa_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return errno_error(-1);
    struct epoll_event event = {.events = EPOLLIN, .data = {.fd = fd}};
    if (connect(fd, &addr.sa, len) < 0
            || epoll_ctl((int)epfd, EPOLL_CTL_ADD, fd, &event) < 0
            || send(fd, PyBytes_AS_STRING(args[3]), (size_t)PyBytes_GET_SIZE(args[3]), 0) < 0)
        return errno_error(fd);
    return PyLong_FromLong(fd);
}

PyDoc_STRVAR(recv_doc,
"recv(fd) -> bytes | None\n\n"
"One datagram from fd (up to 65535 bytes), or None when nothing is waiting. A pending\n"
"socket error (ICMP port unreachable: ConnectionRefusedError) is raised as OSError.");

static PyObject *
recv_one(PyObject *module, PyObject *arg)
{
    long fd;
    if (int_arg(arg, 0, INT_MAX, "fd", &fd) < 0)
        return NULL;
    ssize_t got;
    do {
        got = recv((int)fd, datagram, MAX_DATAGRAM, 0);
    } while (got < 0 && errno == EINTR);
    if (got >= 0)
        return PyBytes_FromStringAndSize(datagram, got);
    if (errno == EAGAIN || errno == EWOULDBLOCK)
        Py_RETURN_NONE;
    return PyErr_SetFromErrno(PyExc_OSError);
}

PyDoc_STRVAR(close_doc, "close(fd)\n\nClose fd (which also takes it out of every epoll set).");

static PyObject *
close_fd(PyObject *module, PyObject *arg)
{
    long fd;
    if (int_arg(arg, 0, INT_MAX, "fd", &fd) < 0)
        return NULL;
    if (close((int)fd) < 0 && errno != EINTR)   /* Linux frees the fd even on EINTR */
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(ready_doc,
"ready(epfd) -> list[int]\n\n"
"The descriptors of epoll set epfd that are ready now (at most 256; timeout 0).");

static PyObject *
ready(PyObject *module, PyObject *arg)
{
    long epfd;
    struct epoll_event events[MAX_EVENTS];
    if (int_arg(arg, 0, INT_MAX, "epfd", &epfd) < 0)
        return NULL;
    int n = epoll_wait((int)epfd, events, MAX_EVENTS, 0);
    if (n < 0) {
        if (errno == EINTR)
            return PyList_New(0);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *fds = PyList_New(n);
    if (fds == NULL)
        return NULL;
    for (int i = 0; i < n; i++) {
        PyObject *fd = PyLong_FromLong(events[i].data.fd);
        if (fd == NULL) {
            Py_DECREF(fds);
            return NULL;
        }
        PyList_SET_ITEM(fds, i, fd);
    }
    return fds;
}

/* Random bits for mix_case, from the kernel CSPRNG 256 bytes at a time; GIL held. */
static uint64_t pool[32];
static int pool_left = 0;
static uint64_t bits;
static int bits_left = 0;

static int
next_bit(void)
{
    if (bits_left == 0) {
        if (pool_left == 0) {
            ssize_t got;
            do {
                got = getrandom(pool, sizeof pool, 0);
            } while (got < 0 && errno == EINTR);
            if (got != (ssize_t)sizeof pool)
                return -1;
            pool_left = 32;
        }
        bits = pool[--pool_left];
        bits_left = 64;
    }
    int bit = (int)(bits & 1);
    bits >>= 1;
    bits_left--;
    return bit;
}

PyDoc_STRVAR(mix_case_doc,
"mix_case(question) -> bytes\n\n"
"question (lowercased wire qname + qtype + qclass) with each letter a-z of the name\n"
"uppercased or not at random (0x20, one bit from the kernel CSPRNG per letter). Label\n"
"length bytes are at most 63, never letters; the last 4 bytes are left alone.");

static PyObject *
mix_case(PyObject *module, PyObject *arg)
{
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "question must be bytes");
        return NULL;
    }
    Py_ssize_t n = PyBytes_GET_SIZE(arg);
    PyObject *out = PyBytes_FromStringAndSize(PyBytes_AS_STRING(arg), n);
    if (out == NULL)
        return NULL;
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < n - 4; i++) {
        if (o[i] < 'a' || o[i] > 'z')
            continue;
        int bit = next_bit();
        if (bit < 0) {
            Py_DECREF(out);
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        if (bit)
            o[i] ^= 0x20;
    }
    return out;
}

static PyMethodDef methods[] = {
    {"mix_case", mix_case, METH_O, mix_case_doc},
    {"open_send", (PyCFunction)(void (*)(void))open_send, METH_FASTCALL, open_send_doc},
    {"recv", recv_one, METH_O, recv_doc},
    {"close", close_fd, METH_O, close_doc},
    {"ready", ready, METH_O, ready_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "pkdns.dns._udpsock",
    "The per-query upstream socket calls of a cache miss, in C (see the source's header).",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__udpsock(void)
{
    return PyModule_Create(&module_def);
}
