/*
 * test.h - a tiny assertion header for plain C test executables run by CTest.
 * Each test file defines test functions, then main() runs them with TEST_RUN(fn).
 * A failing check prints file:line and the values, marks the test failed and returns.
 * Fixture paths come from the NX_FIXTURES define (tests/fixtures in the source tree).
 */
#ifndef NX_TEST_H
#define NX_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int t_failed_checks;
static int t_tests_run, t_tests_failed;
static int t_current_failed;

#define CHECK(cond)                                                                 \
    do {                                                                            \
        if (!(cond)) {                                                              \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            t_failed_checks++; t_current_failed = 1;                                \
            return;                                                                 \
        }                                                                           \
    } while (0)

#define CHECK_MSG(cond, ...)                                                        \
    do {                                                                            \
        if (!(cond)) {                                                              \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__); fputc('\n', stderr);                      \
            t_failed_checks++; t_current_failed = 1;                                \
            return;                                                                 \
        }                                                                           \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                          \
    do {                                                                            \
        long long a_ = (long long)(a), b_ = (long long)(b);                         \
        if (a_ != b_) {                                                             \
            fprintf(stderr, "%s:%d: CHECK_EQ_INT failed: %s = %lld, %s = %lld\n",    \
                    __FILE__, __LINE__, #a, a_, #b, b_);                            \
            t_failed_checks++; t_current_failed = 1;                                \
            return;                                                                 \
        }                                                                           \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                       \
    do {                                                                            \
        double a_ = (double)(a), b_ = (double)(b);                                  \
        if (!(fabs(a_ - b_) <= (tol))) {                                            \
            fprintf(stderr, "%s:%d: CHECK_NEAR failed: %s = %.9g, %s = %.9g (tol %g)\n", \
                    __FILE__, __LINE__, #a, a_, #b, b_, (double)(tol));             \
            t_failed_checks++; t_current_failed = 1;                                \
            return;                                                                 \
        }                                                                           \
    } while (0)

#define CHECK_STR_CONTAINS(hay, needle)                                             \
    do {                                                                            \
        const char *h_ = (hay), *n_ = (needle);                                     \
        if (!h_ || !strstr(h_, n_)) {                                               \
            fprintf(stderr, "%s:%d: expected \"%s\" to contain \"%s\"\n",            \
                    __FILE__, __LINE__, h_ ? h_ : "(null)", n_);                    \
            t_failed_checks++; t_current_failed = 1;                                \
            return;                                                                 \
        }                                                                           \
    } while (0)

#define TEST_RUN(fn)                                                                \
    do {                                                                            \
        t_current_failed = 0;                                                       \
        fn();                                                                       \
        t_tests_run++;                                                              \
        if (t_current_failed) { t_tests_failed++; fprintf(stderr, "FAIL %s\n", #fn); } \
        else printf("ok   %s\n", #fn);                                              \
    } while (0)

#define TEST_END()                                                                  \
    do {                                                                            \
        printf("%d tests, %d failed\n", t_tests_run, t_tests_failed);               \
        return t_tests_failed ? 1 : 0;                                              \
    } while (0)

/* Path of a committed fixture: returns a static buffer "NX_FIXTURES/rel". */
static inline const char *fixture_path(const char *rel) {
    static char buf[8][1024];
    static int slot;
    slot = (slot + 1) % 8;
    snprintf(buf[slot], sizeof buf[slot], "%s/%s", NX_FIXTURES, rel);
    return buf[slot];
}

/* Directory of the shared assets: $NEOX_ASSETS or the default next to the checkout.
 * Returns NULL when absent; the caller decides (under CI=true a missing asset fails). */
static inline const char *assets_dir(void) {
    const char *e = getenv("NEOX_ASSETS");
    return (e && *e) ? e : NX_DEFAULT_ASSETS;
}
static inline int running_in_ci(void) {
    const char *e = getenv("CI");
    return e && strcmp(e, "true") == 0;
}

#endif
