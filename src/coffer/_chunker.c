/*
 * coffer._chunker -- restic's content-defined chunker (restic/chunker v0.4), compiled.
 *
 * restic cuts a file where the Rabin fingerprint of the last 64 bytes, taken modulo the
 * repository's random irreducible polynomial P of degree 53, has its low `average_bits` bits
 * all zero, but never before `min_size` bytes into a chunk and never after `max_size` bytes.
 * Getting this bit-exact is what makes our blobs deduplicate against restic's.
 *
 * restic's loop keeps one rolling digest and restarts it at every cut ("reset": window of zeros,
 * then one 0x01 byte slid in, then the first min_size-64 bytes skipped without hashing).  The
 * 0x01 byte leaves the window exactly when the 64th hashed byte enters, i.e. at chunk offset
 * min_size, the first offset where a cut is allowed.  From then on the digest equals the
 * fingerprint of the 64 data bytes just before the candidate cut, and nothing else.  So whether
 * end offset p is a content cut depends only on data[p-64:p]; that lets this file
 *
 *   - find cuts statelessly: a chunk starting at s ends at the first p in [s+min, s+max] whose
 *     window fingerprint matches the mask, else at s+max, else at end of input;
 *   - hash a few independent stretches of the buffer at once (each warmed up with its own 64
 *     bytes), so the CPU overlaps the table-lookup latency of several digests instead of
 *     waiting on one long dependency chain.  restic's digest chain costs ~8 cycles per byte;
 *     four interleaved chains run at roughly the load throughput instead.
 *
 * The pure-Python chunker_ref.py follows restic's code literally; the tests compare the two.
 *
 * The scanner holds only immutable configuration and tables, so one object may be shared by
 * threads; every scan drops the GIL and keeps the caller's Py_buffer while doing so.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define WINDOW 64
#define POL_DEGREE 53
#define POL_SHIFT (POL_DEGREE - 8)
/* Independent digests hashed side by side, and how many positions each covers per round.  A
 * round is the unit of wasted work when a cut is found early in it (4 * 8 KiB = 32 KiB against
 * ~1 MiB average chunks); the 64-byte warm-up per lane per round costs under 1%. */
#define LANES 4
#define LANE_LEN 8192

#if defined(__GNUC__)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define UNLIKELY(x) (x)
#endif

typedef struct {
    uint64_t out[256]; /* out[b] = fingerprint of b followed by 63 zero bytes */
    uint64_t mod[256]; /* mod[b] = ((b << 53) mod P) | (b << 53) */
    uint64_t mask;     /* cut where (digest & mask) == 0 */
    Py_ssize_t min_size, max_size;
} config;

typedef struct {
    PyObject_HEAD
    config cfg;
    uint64_t pol;
    int ready; /* set once by __init__; tables never change afterwards */
} ScannerObject;

/* ---- polynomial arithmetic over GF(2), only what the tables need ------------------------ */

static int deg64(uint64_t x) {
    int d = -1;
    while (x) {
        x >>= 1;
        d++;
    }
    return d;
}

static uint64_t pol_mod(uint64_t x, uint64_t p) {
    int dp = deg64(p);
    int diff;
    while ((diff = deg64(x) - dp) >= 0)
        x ^= p << diff;
    return x;
}

static void fill_tables(config *c, uint64_t pol) {
    for (int b = 0; b < 256; b++) {
        uint64_t h = pol_mod((uint64_t)b, pol);
        for (int i = 0; i < WINDOW - 1; i++)
            h = pol_mod(h << 8, pol);
        c->out[b] = h;
        c->mod[b] = pol_mod((uint64_t)b << POL_DEGREE, pol) | ((uint64_t)b << POL_DEGREE);
    }
}

/* ---- scanning ------------------------------------------------------------------------------ */

/* restic's updateDigest with polShift fixed at 53-8. */
#define UPDATE(d, b) ((((d) << 8) | (uint64_t)(b)) ^ mod[(d) >> POL_SHIFT])

/* Fingerprint of the 64 bytes at w (the window that ends just before w + 64). */
static inline uint64_t window_digest(const uint64_t *mod, const uint8_t *w) {
    uint64_t d = 0;
    for (int i = 0; i < WINDOW; i++)
        d = UPDATE(d, w[i]);
    return d;
}

/* First end offset p in [lo, hi] with (fingerprint(buf[p-64:p]) & mask) == 0, or -1.
 * Requires lo >= 64 and hi <= length of buf. One digest chain. */
static Py_ssize_t search_one(const config *c, const uint8_t *buf, Py_ssize_t lo, Py_ssize_t hi) {
    const uint64_t *out = c->out, *mod = c->mod;
    const uint64_t mask = c->mask;
    uint64_t d = window_digest(mod, buf + lo - WINDOW);
    if ((d & mask) == 0)
        return lo;
    for (Py_ssize_t p = lo + 1; p <= hi; p++) {
        d ^= out[buf[p - WINDOW - 1]];
        d = UPDATE(d, buf[p - 1]);
        if ((d & mask) == 0)
            return p;
    }
    return -1;
}

/* Same contract as search_one, LANES chains at a time over consecutive stretches. */
static Py_ssize_t search(const config *c, const uint8_t *buf, Py_ssize_t lo, Py_ssize_t hi) {
    const uint64_t *out = c->out, *mod = c->mod;
    const uint64_t mask = c->mask;

    while (hi - lo + 1 >= (Py_ssize_t)LANES * LANE_LEN) {
        /* lane j covers end offsets lo + j*LANE_LEN + k, k in [0, LANE_LEN) */
        const uint8_t *p0 = buf + lo, *p1 = p0 + LANE_LEN, *p2 = p1 + LANE_LEN, *p3 = p2 + LANE_LEN;
        uint64_t d0 = window_digest(mod, p0 - WINDOW);
        uint64_t d1 = window_digest(mod, p1 - WINDOW);
        uint64_t d2 = window_digest(mod, p2 - WINDOW);
        uint64_t d3 = window_digest(mod, p3 - WINDOW);
        Py_ssize_t hit[LANES] = {-1, -1, -1, -1};
        Py_ssize_t k = 0;
        for (;;) {
            if (UNLIKELY(((d0 & mask) == 0) | ((d1 & mask) == 0) | ((d2 & mask) == 0) |
                         ((d3 & mask) == 0))) {
                if ((d0 & mask) == 0)
                    break; /* lane 0 comes first: nothing later can beat it */
                if (hit[1] < 0 && (d1 & mask) == 0)
                    hit[1] = k;
                if (hit[2] < 0 && (d2 & mask) == 0)
                    hit[2] = k;
                if (hit[3] < 0 && (d3 & mask) == 0)
                    hit[3] = k;
            }
            if (++k == LANE_LEN)
                break;
            d0 ^= out[p0[k - WINDOW - 1]];
            d1 ^= out[p1[k - WINDOW - 1]];
            d2 ^= out[p2[k - WINDOW - 1]];
            d3 ^= out[p3[k - WINDOW - 1]];
            d0 = UPDATE(d0, p0[k - 1]);
            d1 = UPDATE(d1, p1[k - 1]);
            d2 = UPDATE(d2, p2[k - 1]);
            d3 = UPDATE(d3, p3[k - 1]);
        }
        if (k < LANE_LEN)
            return lo + k;
        for (int j = 1; j < LANES; j++)
            if (hit[j] >= 0)
                return lo + (Py_ssize_t)j * LANE_LEN + hit[j];
        lo += (Py_ssize_t)LANES * LANE_LEN;
    }
    if (lo > hi)
        return -1;
    return search_one(c, buf, lo, hi);
}

/* End offset of the chunk that starts at `start`, with data known in buf[0:end].  Offsets
 * below `scan_from` are known not to be content cuts (already searched).  Returns -1 when the
 * answer needs bytes past `end` (only if !eof), or when eof and the chunk would be empty. */
static Py_ssize_t find_cut(const config *c, const uint8_t *buf, Py_ssize_t start, Py_ssize_t end,
                           Py_ssize_t scan_from, int eof) {
    Py_ssize_t lo = start + c->min_size;
    Py_ssize_t limit = start + c->max_size;
    Py_ssize_t hi = end < limit ? end : limit;
    if (scan_from > lo)
        lo = scan_from;
    if (lo <= hi) {
        Py_ssize_t p = search(c, buf, lo, hi);
        if (p >= 0)
            return p;
    }
    if (limit <= end)
        return limit;
    if (eof && end > start)
        return end;
    return -1;
}

/* ---- the Python type --------------------------------------------------------------------- */

static int Scanner_init(PyObject *self_obj, PyObject *args, PyObject *kwds) {
    ScannerObject *self = (ScannerObject *)self_obj;
    static char *kwlist[] = {"pol", "min_size", "max_size", "split_mask", NULL};
    PyObject *pol_obj, *mask_obj;
    unsigned long long pol, mask;
    Py_ssize_t min_size, max_size;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!nnO!", kwlist, &PyLong_Type, &pol_obj,
                                     &min_size, &max_size, &PyLong_Type, &mask_obj))
        return -1;
    if (self->ready) {
        /* other threads may be scanning with these tables right now */
        PyErr_SetString(PyExc_RuntimeError, "Scanner is already initialised");
        return -1;
    }
    pol = PyLong_AsUnsignedLongLong(pol_obj);
    if (pol == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    mask = PyLong_AsUnsignedLongLong(mask_obj);
    if (mask == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    if (deg64((uint64_t)pol) != POL_DEGREE) {
        PyErr_Format(PyExc_ValueError, "chunker polynomial must have degree %d, got degree %d",
                     POL_DEGREE, deg64((uint64_t)pol));
        return -1;
    }
    if (min_size < WINDOW || max_size < min_size || max_size > PY_SSIZE_T_MAX / 4) {
        PyErr_Format(PyExc_ValueError,
                     "chunk sizes must satisfy %d <= min_size <= max_size (got %zd, %zd)", WINDOW,
                     min_size, max_size);
        return -1;
    }
    self->pol = (uint64_t)pol;
    self->cfg.mask = (uint64_t)mask;
    self->cfg.min_size = min_size;
    self->cfg.max_size = max_size;
    fill_tables(&self->cfg, self->pol);
    self->ready = 1;
    return 0;
}

static int check_ready(ScannerObject *self) {
    if (!self->ready) {
        PyErr_SetString(PyExc_RuntimeError, "Scanner.__init__ was not called");
        return -1;
    }
    return 0;
}

static int check_range(Py_ssize_t len, Py_ssize_t start, Py_ssize_t end, Py_ssize_t scan_from) {
    if (start < 0 || start > end || end > len || scan_from < 0) {
        PyErr_SetString(PyExc_ValueError, "need 0 <= start <= end <= len(buffer), scan_from >= 0");
        return -1;
    }
    return 0;
}

static PyObject *Scanner_find_cut(PyObject *self_obj, PyObject *args) {
    ScannerObject *self = (ScannerObject *)self_obj;
    Py_buffer view;
    Py_ssize_t start, end, scan_from, cut;
    int eof;
    if (check_ready(self) < 0)
        return NULL;
    if (!PyArg_ParseTuple(args, "y*nnnp:find_cut", &view, &start, &end, &scan_from, &eof))
        return NULL;
    if (check_range(view.len, start, end, scan_from) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    cut = find_cut(&self->cfg, (const uint8_t *)view.buf, start, end, scan_from, eof);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(cut);
}

static PyObject *Scanner_split(PyObject *self_obj, PyObject *args) {
    ScannerObject *self = (ScannerObject *)self_obj;
    Py_buffer view;
    Py_ssize_t *cuts = NULL, n = 0, cap = 0;
    int nomem = 0;
    if (check_ready(self) < 0)
        return NULL;
    if (!PyArg_ParseTuple(args, "y*:split", &view))
        return NULL;

    Py_BEGIN_ALLOW_THREADS
    const uint8_t *buf = (const uint8_t *)view.buf;
    Py_ssize_t start = 0;
    while (start < view.len) {
        Py_ssize_t cut = find_cut(&self->cfg, buf, start, view.len, 0, 1);
        if (n == cap) {
            Py_ssize_t ncap = cap ? cap * 2 : view.len / self->cfg.min_size + 16;
            Py_ssize_t *grown = realloc(cuts, (size_t)ncap * sizeof(*cuts));
            if (grown == NULL) {
                nomem = 1;
                break;
            }
            cuts = grown;
            cap = ncap;
        }
        cuts[n++] = cut;
        start = cut;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);

    PyObject *result = NULL;
    if (nomem) {
        PyErr_NoMemory();
    } else if ((result = PyList_New(n)) != NULL) {
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *v = PyLong_FromSsize_t(cuts[i]);
            if (v == NULL) {
                Py_CLEAR(result);
                break;
            }
            PyList_SET_ITEM(result, i, v);
        }
    }
    free(cuts);
    return result;
}

static PyObject *u64_tuple(const uint64_t *t) {
    PyObject *tup = PyTuple_New(256);
    if (tup == NULL)
        return NULL;
    for (int i = 0; i < 256; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(t[i]);
        if (v == NULL) {
            Py_DECREF(tup);
            return NULL;
        }
        PyTuple_SET_ITEM(tup, i, v);
    }
    return tup;
}

static PyObject *Scanner_tables(PyObject *self_obj, PyObject *Py_UNUSED(ignored)) {
    ScannerObject *self = (ScannerObject *)self_obj;
    if (check_ready(self) < 0)
        return NULL;
    PyObject *out = u64_tuple(self->cfg.out), *mod = NULL, *res = NULL;
    if (out != NULL && (mod = u64_tuple(self->cfg.mod)) != NULL)
        res = PyTuple_Pack(2, out, mod);
    Py_XDECREF(out);
    Py_XDECREF(mod);
    return res;
}

static PyMethodDef Scanner_methods[] = {
    {"find_cut", Scanner_find_cut, METH_VARARGS,
     "find_cut(buffer, start, end, scan_from, eof) -> int\n\n"
     "End offset of the chunk starting at start, given data buffer[:end]. Offsets below\n"
     "scan_from were already searched. -1 means: need more data (or, at eof, no chunk)."},
    {"split", Scanner_split, METH_VARARGS,
     "split(buffer) -> list[int]\n\nEnd offsets of all chunks of an in-memory buffer."},
    {"tables", Scanner_tables, METH_NOARGS,
     "tables() -> (out, mod)\n\nThe two 256-entry lookup tables, for tests."},
    {NULL, NULL, 0, NULL},
};

static PyObject *Scanner_get_pol(PyObject *self_obj, void *Py_UNUSED(closure)) {
    return PyLong_FromUnsignedLongLong(((ScannerObject *)self_obj)->pol);
}

static PyGetSetDef Scanner_getset[] = {
    {"pol", Scanner_get_pol, NULL, "the polynomial", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot Scanner_slots[] = {
    {Py_tp_doc, "Scanner(pol, min_size, max_size, split_mask)\n\n"
                "restic's chunk boundary search for one polynomial and size configuration.\n"
                "Immutable after construction, safe to share between threads."},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_init, Scanner_init},
    {Py_tp_methods, Scanner_methods},
    {Py_tp_getset, Scanner_getset},
    {0, NULL},
};

static PyType_Spec Scanner_spec = {
    "coffer._chunker.Scanner",
    sizeof(ScannerObject),
    0,
    Py_TPFLAGS_DEFAULT,
    Scanner_slots,
};

static struct PyModuleDef chunker_module = {
    PyModuleDef_HEAD_INIT,
    "_chunker",
    "restic-compatible content-defined chunking (compiled core).",
    -1,
    NULL,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC PyInit__chunker(void) {
    PyObject *m = PyModule_Create(&chunker_module);
    if (m == NULL)
        return NULL;
    PyObject *type = PyType_FromSpec(&Scanner_spec);
    if (type == NULL || PyModule_AddObject(m, "Scanner", type) < 0) {
        Py_XDECREF(type);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "WINDOW_SIZE", WINDOW) < 0 ||
        PyModule_AddIntConstant(m, "POL_DEGREE", POL_DEGREE) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
