/*
 * mathgen.c - a generated mathematics component in the style of DeepMind Mathematics (the
 * Pile's "DM Mathematics"): plain-text question/answer pairs over arithmetic, linear
 * equations, number theory, polynomials, sequences and unit conversion. Deterministic for
 * a seed (numpy-compatible MT19937), and every answer is computed exactly in integers.
 */
#include "data/data.h"

static int64_t rnd(nx_mt19937 *mt, int64_t lo, int64_t hi) {   /* uniform in [lo, hi] */
    return lo + (int64_t)nx_mt19937_interval(mt, (uint64_t)(hi - lo));
}

static int64_t gcd64(int64_t a, int64_t b) {
    if (a < 0) a = -a;
    if (b < 0) b = -b;
    while (b) { int64_t t = a % b; a = b; b = t; }
    return a;
}

static bool is_prime(int64_t n) {
    if (n < 2) return false;
    for (int64_t d = 2; d * d <= n; d++)
        if (n % d == 0) return false;
    return true;
}

static const char *const k_letters = "abcdfghjklmnpqrstuvwxyz";

static void problem(nx_mt19937 *mt, nx_buf *o) {
    char v = k_letters[rnd(mt, 0, 22)];
    switch (rnd(mt, 0, 11)) {
    case 0: {
        int64_t a = rnd(mt, -99999, 99999), b = rnd(mt, -99999, 99999);
        nx__buf_printf(o, "What is %lld + %lld?\n%lld\n", (long long)a, (long long)b, (long long)(a + b));
        break;
    }
    case 1: {
        int64_t a = rnd(mt, -9999, 9999), b = rnd(mt, -999, 999);
        nx__buf_printf(o, "Calculate %lld*%lld.\n%lld\n", (long long)a, (long long)b, (long long)(a * b));
        break;
    }
    case 2: {
        int64_t b = rnd(mt, 2, 99), q = rnd(mt, -999, 999);
        nx__buf_printf(o, "Divide %lld by %lld.\n%lld\n", (long long)(b * q), (long long)b, (long long)q);
        break;
    }
    case 3: {   /* a*v + b = c with an integer root */
        int64_t a = rnd(mt, 1, 40) * (rnd(mt, 0, 1) ? 1 : -1), x = rnd(mt, -50, 50), b = rnd(mt, -200, 200);
        nx__buf_printf(o, "Solve %lld*%c + %lld = %lld for %c.\n%lld\n", (long long)a, v, (long long)b,
                       (long long)(a * x + b), v, (long long)x);
        break;
    }
    case 4: {
        int64_t a = rnd(mt, 2, 5000), b = rnd(mt, 2, 5000);
        nx__buf_printf(o, "What is the greatest common divisor of %lld and %lld?\n%lld\n", (long long)a, (long long)b,
                       (long long)gcd64(a, b));
        break;
    }
    case 5: {
        int64_t a = rnd(mt, 2, 300), b = rnd(mt, 2, 300);
        nx__buf_printf(o, "Calculate the least common multiple of %lld and %lld.\n%lld\n", (long long)a, (long long)b,
                       (long long)(a / gcd64(a, b) * b));
        break;
    }
    case 6: {
        int64_t n = rnd(mt, 2, 20000);
        nx__buf_printf(o, "Is %lld a prime number?\n%s\n", (long long)n, is_prime(n) ? "True" : "False");
        break;
    }
    case 7: {   /* evaluate a quadratic */
        int64_t a = rnd(mt, -9, 9), b = rnd(mt, -20, 20), c = rnd(mt, -50, 50), x = rnd(mt, -10, 10);
        nx__buf_printf(o, "Let %c(q) = %lld*q**2 + %lld*q + %lld. What is %c(%lld)?\n%lld\n", v, (long long)a,
                       (long long)b, (long long)c, v, (long long)x, (long long)(a * x * x + b * x + c));
        break;
    }
    case 8: {   /* next term of an arithmetic sequence */
        int64_t s = rnd(mt, -500, 500), d = rnd(mt, -60, 60);
        nx__buf_printf(o, "What is the next term in %lld, %lld, %lld, %lld?\n%lld\n", (long long)s, (long long)(s + d),
                       (long long)(s + 2 * d), (long long)(s + 3 * d), (long long)(s + 4 * d));
        break;
    }
    case 9: {
        int64_t n = rnd(mt, 0, 65535);
        nx__buf_printf(o, "Convert %lld (base 10) to base 2.\n", (long long)n);
        char bits[40];
        int k = 0;
        do { bits[k++] = (char)('0' + (n & 1)); n >>= 1; } while (n);
        while (k) nx__buf_append(o, &bits[--k], 1);
        nx__buf_append(o, "\n", 1);
        break;
    }
    case 10: {
        int64_t m = rnd(mt, 1, 9999);
        nx__buf_printf(o, "How many millimeters are there in %lld.%02lld meters?\n%lld\n", (long long)(m / 100),
                       (long long)(m % 100), (long long)(m * 10));
        break;
    }
    default: {   /* sort a list */
        int64_t a[5];
        for (int i = 0; i < 5; i++) a[i] = rnd(mt, -100, 100);
        nx__buf_printf(o, "Sort %lld, %lld, %lld, %lld, %lld in ascending order.\n", (long long)a[0], (long long)a[1],
                       (long long)a[2], (long long)a[3], (long long)a[4]);
        for (int i = 1; i < 5; i++)
            for (int j = i; j > 0 && a[j - 1] > a[j]; j--) { int64_t t = a[j]; a[j] = a[j - 1]; a[j - 1] = t; }
        nx__buf_printf(o, "%lld, %lld, %lld, %lld, %lld\n", (long long)a[0], (long long)a[1], (long long)a[2],
                       (long long)a[3], (long long)a[4]);
        break;
    }
    }
}

void nx__mathgen_doc(nx_mt19937 *mt, int n_problems, nx_buf *out) {
    for (int i = 0; i < n_problems; i++) problem(mt, out);
}
