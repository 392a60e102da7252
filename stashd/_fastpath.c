/* The memory store's hot path in C: plain GET and SET parsed, run and answered in one pass.
 *
 * A pipelined read of small GETs and SETs costs the Python path about a microsecond per
 * command (framing guard, hiredis, dispatch, rules, encoding); here it costs a fraction
 * of that. run() walks a read from a request boundary and handles leading requests of
 * exactly the forms `*2 $3 GET key` and `*3 $3 SET key value` (any case), well formed and
 * within the caller's caps, against the caller's keyspace. At the first byte it is not
 * sure about (another command, another form, a malformed or unfinished request, a value
 * over the payload limit, a new namespace, an expired key to free) it stops and says how
 * far it got: the rest of the read goes to the framing guard and the general dispatch,
 * which give every answer the protocol defines. So this file never writes an error and
 * never decides a rule the Python path does not decide the same way; tests/test_fastpath.py
 * holds the two paths to the same replies and the same stored state.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <string.h>

static PyObject *str_data;       /* "data": Keyspace.data, key -> Entry */
static PyObject *str_value;      /* Entry.value */
static PyObject *str_expires_at; /* Entry.expires_at, ms since the epoch */
static PyObject *str_version;    /* Entry.version */
static PyObject *str_insert;     /* MemoryStore.insert(space, key, entry) */
static PyObject *str_spaces;     /* MemoryStore.spaces, namespace -> Keyspace */

/* A growable output buffer: replies are gathered here and appended to the caller's
 * bytearray once, so a read costs one resize however many commands it holds. */
typedef struct {
    char *buf;
    Py_ssize_t len;
    Py_ssize_t cap;
    char small[4096];
} Out;

static int
out_reserve(Out *o, Py_ssize_t more)
{
    if (o->len + more <= o->cap) {
        return 0;
    }
    Py_ssize_t cap = o->cap * 2;
    while (cap < o->len + more) {
        cap *= 2;
    }
    char *grown;
    if (o->buf == o->small) {
        grown = PyMem_Malloc(cap);
        if (grown != NULL) {
            memcpy(grown, o->buf, o->len);
        }
    }
    else {
        grown = PyMem_Realloc(o->buf, cap);
    }
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    o->buf = grown;
    o->cap = cap;
    return 0;
}

static int
out_write(Out *o, const char *s, Py_ssize_t n)
{
    if (out_reserve(o, n) < 0) {
        return -1;
    }
    memcpy(o->buf + o->len, s, n);
    o->len += n;
    return 0;
}

/* One header line: `lead`, then a plain decimal (no sign, no leading zero, at most ten
 * digits), then CRLF. 0 and *next past the line; -1 for anything else, including a line
 * that is not all here yet: either way the guard, not this file, takes the read from here. */
static int
header(const char *p, const char *end, char lead, long long *value, const char **next)
{
    if (p >= end || *p != lead) {
        return -1;
    }
    const char *digits = ++p;
    long long v = 0;
    while (p < end && *p >= '0' && *p <= '9') {
        if (p - digits >= 10) {
            return -1;
        }
        v = v * 10 + (*p - '0');
        p++;
    }
    if (p == digits || end - p < 2 || p[0] != '\r' || p[1] != '\n') {
        return -1;
    }
    if (p - digits > 1 && *digits == '0') {
        return -1;
    }
    *value = v;
    *next = p + 2;
    return 0;
}

/* A bulk string within `cap` bytes, CRLF-terminated: its start and length. */
static int
bulk(const char *p, const char *end, long long cap, const char **start, Py_ssize_t *len,
     const char **next)
{
    long long n;
    if (header(p, end, '$', &n, &p) < 0 || n > cap || end - p < n + 2) {
        return -1;
    }
    if (p[n] != '\r' || p[n + 1] != '\n') {
        return -1;
    }
    *start = p;
    *len = (Py_ssize_t)n;
    *next = p + n + 2;
    return 0;
}

/* Entry's three __slots__, by their offsets in the instance. Entries are read and built
 * here by these offsets, as CPython's own slot descriptors do, rather than through
 * getattr and a call of Entry.__init__ in Python, which cost as much as the rest of a
 * SET. Entry.__init__ only assigns the three fields, so the entries are the same. */
static PyTypeObject *entry_cls;
static Py_ssize_t off_value, off_expires, off_version;

static int
entry_layout(PyObject *type)
{
    if ((PyTypeObject *)type == entry_cls) {
        return 0;
    }
    if (!PyType_Check(type)) {
        PyErr_SetString(PyExc_TypeError, "entry_type must be a class");
        return -1;
    }
    PyObject *names[3] = {str_value, str_expires_at, str_version};
    Py_ssize_t offsets[3];
    for (int i = 0; i < 3; i++) {
        PyObject *d = PyObject_GetAttr(type, names[i]);
        if (d == NULL) {
            return -1;
        }
        int ok = Py_IS_TYPE(d, &PyMemberDescr_Type) &&
                 ((PyMemberDescrObject *)d)->d_member->type == T_OBJECT_EX;
        if (ok) {
            offsets[i] = ((PyMemberDescrObject *)d)->d_member->offset;
        }
        Py_DECREF(d);
        if (!ok) {
            PyErr_SetString(PyExc_TypeError, "entry_type's fields must be __slots__");
            return -1;
        }
    }
    Py_INCREF(type);
    Py_XSETREF(entry_cls, (PyTypeObject *)type);
    off_value = offsets[0];
    off_expires = offsets[1];
    off_version = offsets[2];
    return 0;
}

/* A field of an entry of exactly entry_cls (borrowed; NULL if never set). */
#define FIELD(obj, off) (*(PyObject **)((char *)(obj) + (off)))

/* An int field as a C number: 0, or -1 (with an exception set, or none when the field
 * is unset or not an int: the Python path then takes the request). */
static int
long_field(PyObject *obj, Py_ssize_t off, long long *value)
{
    PyObject *v = FIELD(obj, off);
    if (v == NULL || !PyLong_CheckExact(v)) {
        return -1;
    }
    *value = PyLong_AsLongLong(v);
    return (*value == -1 && PyErr_Occurred()) ? -1 : 0;
}

enum { NONE = 0, GET = 1, SET = 2 };
enum { DONE = 0, STOP = 1, FAIL = -1 };

/* The protocol's null: RESP2's null bulk string, or RESP3's null. */
static int
null_reply(Out *o, int proto)
{
    int rc = proto == 2 ? out_write(o, "$-1\r\n", 5) : out_write(o, "_\r\n", 3);
    return rc < 0 ? FAIL : DONE;
}

/* GET key: the live value, or the protocol's null; an expired entry is left for the
 * Python path to free (STOP). */
static int
run_get(PyObject *data, const char *key, Py_ssize_t klen, long long now, int proto, Out *o)
{
    if (data == NULL) {
        return null_reply(o, proto);
    }
    PyObject *k = PyBytes_FromStringAndSize(key, klen);
    if (k == NULL) {
        return FAIL;
    }
    PyObject *entry = PyDict_GetItemWithError(data, k); /* borrowed */
    Py_DECREF(k);
    if (entry == NULL) {
        if (PyErr_Occurred()) {
            return FAIL;
        }
        return null_reply(o, proto);
    }
    long long expires_at;
    if (Py_TYPE(entry) != entry_cls || long_field(entry, off_expires, &expires_at) < 0) {
        return PyErr_Occurred() ? FAIL : STOP;
    }
    if (expires_at <= now) {
        return STOP;
    }
    PyObject *value = FIELD(entry, off_value);
    if (value == NULL || !PyBytes_Check(value)) {
        return STOP;
    }
    Py_INCREF(value);
    char head[32];
    Py_ssize_t n = PyBytes_GET_SIZE(value);
    int hlen = snprintf(head, sizeof head, "$%zd\r\n", n);
    int rc = out_reserve(o, hlen + n + 2);
    if (rc == 0) {
        memcpy(o->buf + o->len, head, hlen);
        memcpy(o->buf + o->len + hlen, PyBytes_AS_STRING(value), n);
        memcpy(o->buf + o->len + hlen + n, "\r\n", 2);
        o->len += hlen + n + 2;
    }
    Py_DECREF(value);
    return rc < 0 ? FAIL : DONE;
}

/* SET key value with the default TTL: a new version of a live key, version 1 of a new or
 * expired one, exactly as MemoryView.put_value. A new key goes through store.insert, which
 * gives it its SCAN place. */
static int
run_set(PyObject *store, PyObject *space, PyObject *data, const char *key,
        Py_ssize_t klen, const char *val, Py_ssize_t vlen, long long now, long long expires_at,
        Out *o)
{
    if (data == NULL) {
        return STOP; /* a namespace's first write creates its keyspace: Python's job */
    }
    PyObject *k = PyBytes_FromStringAndSize(key, klen);
    if (k == NULL) {
        return FAIL;
    }
    PyObject *old = PyDict_GetItemWithError(data, k); /* borrowed */
    long long version = 1;
    if (old == NULL && PyErr_Occurred()) {
        Py_DECREF(k);
        return FAIL;
    }
    if (old != NULL) {
        long long old_expires, old_version;
        if (Py_TYPE(old) != entry_cls || long_field(old, off_expires, &old_expires) < 0 ||
            long_field(old, off_version, &old_version) < 0) {
            Py_DECREF(k);
            return PyErr_Occurred() ? FAIL : STOP;
        }
        version = old_expires > now ? old_version + 1 : 1;
    }
    /* Entry(value, expires_at, version), its slots filled as its __init__ would. */
    PyObject *entry = entry_cls->tp_alloc(entry_cls, 0);
    if (entry == NULL) {
        Py_DECREF(k);
        return FAIL;
    }
    FIELD(entry, off_value) = PyBytes_FromStringAndSize(val, vlen);
    FIELD(entry, off_expires) = PyLong_FromLongLong(expires_at);
    FIELD(entry, off_version) = PyLong_FromLongLong(version);
    if (!FIELD(entry, off_value) || !FIELD(entry, off_expires) || !FIELD(entry, off_version)) {
        Py_DECREF(entry);
        Py_DECREF(k);
        return FAIL;
    }
    int rc;
    if (old != NULL) {
        rc = PyDict_SetItem(data, k, entry);
    }
    else {
        PyObject *done = PyObject_CallMethodObjArgs(store, str_insert, space, k, entry, NULL);
        rc = done == NULL ? -1 : 0;
        Py_XDECREF(done);
    }
    Py_DECREF(entry);
    Py_DECREF(k);
    if (rc < 0) {
        return FAIL;
    }
    return out_write(o, "+OK\r\n", 5) < 0 ? FAIL : DONE;
}

PyDoc_STRVAR(run_doc,
"run(data, store, ns, entry_type, now, ttl_ms, max_bulk, max_payload, max_request, proto, out)\n"
"--\n\n"
"Answer the leading plain GET/SET requests of ``data`` (which starts at a request\n"
"boundary) against ``store``'s keyspace ``ns``, appending the replies to ``out``.\n"
"Returns bytes consumed * 4 + the last command run (0 none, 1 GET, 2 SET).");

static PyObject *
run(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 11) {
        PyErr_SetString(PyExc_TypeError, "run() takes 11 arguments");
        return NULL;
    }
    PyObject *data_obj = args[0], *store = args[1], *ns = args[2], *entry_type = args[3];
    PyObject *out = args[10];
    if (!PyBytes_Check(data_obj) || !PyByteArray_Check(out)) {
        PyErr_SetString(PyExc_TypeError, "run() needs bytes data and a bytearray out");
        return NULL;
    }
    long long now = PyLong_AsLongLong(args[4]);
    long long ttl_ms = PyLong_AsLongLong(args[5]);
    long long max_bulk = PyLong_AsLongLong(args[6]);
    long long max_payload = PyLong_AsLongLong(args[7]);
    long long max_request = PyLong_AsLongLong(args[8]);
    long proto = PyLong_AsLong(args[9]);
    if (PyErr_Occurred() || entry_layout(entry_type) < 0) {
        return NULL;
    }

    /* The namespace's keyspace and its dict, held for the whole read: an insert's sweep
     * may drop other namespaces' keyspaces, never one it has just written to. */
    PyObject *spaces = PyObject_GetAttr(store, str_spaces);
    if (spaces == NULL) {
        return NULL;
    }
    PyObject *space = PyDict_GetItemWithError(spaces, ns);
    Py_XINCREF(space);
    Py_DECREF(spaces);
    PyObject *data = NULL;
    if (space == NULL) {
        if (PyErr_Occurred()) {
            return NULL;
        }
    }
    else if ((data = PyObject_GetAttr(space, str_data)) == NULL) {
        Py_DECREF(space);
        return NULL;
    }
    else if (!PyDict_CheckExact(data)) {
        PyErr_SetString(PyExc_TypeError, "a keyspace's data must be a dict");
        Py_DECREF(data);
        Py_DECREF(space);
        return NULL;
    }

    /* The guard refuses a bulk over max_bulk and answers TOOLARGE for one over the
     * payload limit, key or value: past the smaller of the two, it must see the request. */
    long long cap = max_bulk < max_payload ? max_bulk : max_payload;
    Out o;
    o.buf = o.small;
    o.len = 0;
    o.cap = sizeof o.small;
    const char *begin = PyBytes_AS_STRING(data_obj);
    const char *end = begin + PyBytes_GET_SIZE(data_obj);
    const char *p = begin;
    int last = NONE;
    int status = DONE;
    while (p < end) {
        const char *q;
        long long argc, n;
        if (header(p, end, '*', &argc, &q) < 0 || (argc != 2 && argc != 3)) {
            break;
        }
        if (header(q, end, '$', &n, &q) < 0 || n != 3 || end - q < 5 || q[3] != '\r' ||
            q[4] != '\n') {
            break;
        }
        /* `| 0x20` folds exactly one other byte onto each lowercase letter: its capital. */
        int kind = NONE;
        if ((q[1] | 0x20) == 'e' && (q[2] | 0x20) == 't') {
            char c = q[0] | 0x20;
            kind = (c == 'g' && argc == 2) ? GET : (c == 's' && argc == 3) ? SET : NONE;
        }
        if (kind == NONE) {
            break;
        }
        q += 5;
        const char *key, *val = NULL;
        Py_ssize_t klen, vlen = 0;
        if (bulk(q, end, cap, &key, &klen, &q) < 0) {
            break;
        }
        if (kind == SET && bulk(q, end, cap, &val, &vlen, &q) < 0) {
            break;
        }
        if (q - p > max_request) {
            break;
        }
        status = kind == GET
                     ? run_get(data, key, klen, now, (int)proto, &o)
                     : run_set(store, space, data, key, klen, val, vlen, now,
                               now + ttl_ms, &o);
        if (status != DONE) {
            break;
        }
        last = kind;
        p = q;
    }
    Py_XDECREF(data);
    Py_XDECREF(space);
    if (status == FAIL) {
        if (o.buf != o.small) {
            PyMem_Free(o.buf);
        }
        return NULL;
    }
    /* Replies of the requests run so far, even when the read goes on in Python. */
    Py_ssize_t had = PyByteArray_GET_SIZE(out);
    int rc = PyByteArray_Resize(out, had + o.len);
    if (rc == 0) {
        memcpy(PyByteArray_AS_STRING(out) + had, o.buf, o.len);
    }
    if (o.buf != o.small) {
        PyMem_Free(o.buf);
    }
    if (rc < 0) {
        return NULL;
    }
    /* One int, not a tuple: a tuple per read would be the only object the garbage
     * collector tracks on this path, and would set off its collections. */
    return PyLong_FromSsize_t((Py_ssize_t)(p - begin) * 4 + last);
}

static PyMethodDef methods[] = {
    {"run", (PyCFunction)(void (*)(void))run, METH_FASTCALL, run_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "stashd._fastpath",
    "The memory store's hot path in C: plain GET and SET parsed, run and answered in one pass.",
    -1,
    methods,
};

PyMODINIT_FUNC
PyInit__fastpath(void)
{
    str_data = PyUnicode_InternFromString("data");
    str_value = PyUnicode_InternFromString("value");
    str_expires_at = PyUnicode_InternFromString("expires_at");
    str_version = PyUnicode_InternFromString("version");
    str_insert = PyUnicode_InternFromString("insert");
    str_spaces = PyUnicode_InternFromString("spaces");
    if (!str_data || !str_value || !str_expires_at || !str_version || !str_insert ||
        !str_spaces) {
        return NULL;
    }
    return PyModule_Create(&module);
}
