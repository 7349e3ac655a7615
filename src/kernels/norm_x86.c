/*
 * norm_x86.c - LayerNorm on AVX-512, bit for bit nx__layernorm_ref: the reference sums each row
 * in 8 double lanes (element i into lane i mod 8) and combines them in a fixed tree, which is
 * one 8-lane double vector here, then the same float expression per element. Compiled with
 * -ffp-contract=off (as ref.c), so no multiply-add is fused on either side.
 */
#include "kernels/kernels.h"

#include <math.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define T512 __attribute__((target("avx512f,avx2,fma")))

/* Σ x (dev: Σ (x - mu)²) over n values in the reference's lanes and order. */
static T512 double sum8_avx512(const float *x, int n, bool dev, double mu) {
    __m512d s = _mm512_setzero_pd(), m = _mm512_set1_pd(mu);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m512d v = _mm512_cvtps_pd(_mm256_loadu_ps(x + i));
        if (dev) {
            v = _mm512_sub_pd(v, m);
            v = _mm512_mul_pd(v, v);
        }
        s = _mm512_add_pd(s, v);
    }
    double l[8];
    _mm512_storeu_pd(l, s);
    for (; i < n; i++) {
        double v = dev ? (double)x[i] - mu : (double)x[i];
        l[i % 8] += dev ? v * v : v;
    }
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

T512 void nx__layernorm_avx512(float *y, const float *x, const float *w, const float *b, int T, int C, float eps) {
    for (int t = 0; t < T; t++) {
        const float *xt = x + (size_t)t * C;
        float *yt = y + (size_t)t * C;
        double mean = sum8_avx512(xt, C, false, 0.0) / C;
        double var = sum8_avx512(xt, C, true, mean) / C;
        float rstd = (float)(1.0 / sqrt(var + (double)eps));
        float m = (float)mean;
        __m512 mv = _mm512_set1_ps(m), rv = _mm512_set1_ps(rstd);
        int i = 0;
        for (; i + 16 <= C; i += 16) {
            __m512 v = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(xt + i), mv), rv);
            _mm512_storeu_ps(yt + i, _mm512_add_ps(_mm512_mul_ps(v, _mm512_loadu_ps(w + i)), _mm512_loadu_ps(b + i)));
        }
        for (; i < C; i++) yt[i] = (xt[i] - m) * rstd * w[i] + b[i];
    }
}

#else

void nx__layernorm_avx512(float *y, const float *x, const float *w, const float *b, int T, int C, float eps) {
    nx__layernorm_ref(y, x, w, b, T, C, eps);
}

#endif
