/*
 * rlimit-shim: an LD_PRELOAD library that lets agave-validator 3.1 start where the hard
 * RLIMIT_NOFILE / RLIMIT_MEMLOCK cannot be raised (containers, CI sandboxes). Test use only.
 *
 * Agave (solana-core/src/resource_limits.rs) refuses to start unless getrlimit() reports at
 * least 1,000,000 open files and 2,000,000,000 bytes of locked memory after it has tried to
 * raise them with setrlimit(). For those two resources only, this shim:
 *   - getrlimit: reports max(real, wanted) as both the soft and the hard limit;
 *   - setrlimit: raises the real soft limit as far as the real hard limit allows and
 *     reports success.
 * Every other resource, and any pid other than self for prlimit, goes straight to libc.
 * A three-node loopback test cluster stays far below the real limits.
 *
 * `nm -D agave-validator` (3.1.12) imports only getrlimit and setrlimit; the 64-bit and
 * prlimit variants are wrapped as well in case another build or a library calls them.
 *
 * The libc headers are deliberately not included: glibc declares these functions with an
 * enum resource type, and on x86-64 Linux `struct rlimit` and `struct rlimit64` are both two
 * unsigned longs, so one private declaration serves every variant.
 *
 * Build: gcc -shared -fPIC -O2 -o librlimit-shim.so rlimit-shim.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>

struct lim { unsigned long cur, max; };
#define INF (~0UL)
#define NOFILE 7  /* RLIMIT_NOFILE on Linux */
#define MEMLOCK 8 /* RLIMIT_MEMLOCK on Linux */

typedef int (*get_fn)(int, struct lim *);
typedef int (*set_fn)(int, const struct lim *);
typedef int (*prl_fn)(int, int, const struct lim *, struct lim *);

static unsigned long wanted(int resource) {
    return resource == NOFILE ? 1000000UL : resource == MEMLOCK ? 2000000000UL : 0;
}

static void inflate(int resource, struct lim *l) {
    unsigned long w = wanted(resource);
    if (w == 0 || l == NULL) return;
    if (l->cur != INF && l->cur < w) l->cur = w;
    if (l->max != INF && l->max < w) l->max = w;
}

/* The soft limit to really set: what was asked, capped at the real hard limit. */
static int capped(const struct lim *real_now, const struct lim *asked, struct lim *out) {
    unsigned long target = asked->cur;
    if (real_now->max != INF && (target == INF || target > real_now->max)) target = real_now->max;
    if (target <= real_now->cur) return 0;
    out->cur = target;
    out->max = real_now->max;
    return 1;
}

#define NEXT(type, name) static type real; if (!real) real = (type)dlsym(RTLD_NEXT, name)

#define SHIM_GET(name)                                                              \
    int name(int resource, struct lim *l) {                                         \
        NEXT(get_fn, #name);                                                        \
        int rc = real(resource, l);                                                 \
        if (rc == 0) inflate(resource, l);                                          \
        return rc;                                                                  \
    }

#define SHIM_SET(name, getname)                                                     \
    int name(int resource, const struct lim *l) {                                   \
        NEXT(set_fn, #name);                                                        \
        static get_fn real_get;                                                     \
        if (!real_get) real_get = (get_fn)dlsym(RTLD_NEXT, getname);                \
        if (wanted(resource) == 0 || l == NULL) return real(resource, l);           \
        struct lim now, next;                                                       \
        if (real_get(resource, &now) == 0 && capped(&now, l, &next))                \
            (void)real(resource, &next);                                            \
        return 0;                                                                   \
    }

#define SHIM_PRLIMIT(name)                                                          \
    int name(int pid, int resource, const struct lim *new_l, struct lim *old_l) {  \
        NEXT(prl_fn, #name);                                                        \
        if (wanted(resource) == 0 || pid != 0) return real(pid, resource, new_l, old_l); \
        struct lim now, next;                                                       \
        int rc = real(0, resource, NULL, &now);                                     \
        if (rc != 0) return rc;                                                     \
        if (new_l != NULL && capped(&now, new_l, &next)) (void)real(0, resource, &next, NULL); \
        if (old_l != NULL) { *old_l = now; inflate(resource, old_l); }              \
        return 0;                                                                   \
    }

SHIM_GET(getrlimit)
SHIM_GET(getrlimit64)
SHIM_SET(setrlimit, "getrlimit")
SHIM_SET(setrlimit64, "getrlimit64")
SHIM_PRLIMIT(prlimit)
SHIM_PRLIMIT(prlimit64)
