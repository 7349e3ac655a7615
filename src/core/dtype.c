/* dtype.c - dtype names and sizes, f16/bf16 <-> f32 conversion (scalar reference). */
#include "core.h"

static const struct { const char *name; size_t size; size_t block; } k_dtypes[NX_DTYPE_COUNT] = {
    [NX_DTYPE_INVALID] = {"?", 0, 1},
    [NX_F64] = {"F64", 8, 1},   [NX_F32] = {"F32", 4, 1},   [NX_F16] = {"F16", 2, 1},
    [NX_BF16] = {"BF16", 2, 1}, [NX_I64] = {"I64", 8, 1},   [NX_I32] = {"I32", 4, 1},
    [NX_I16] = {"I16", 2, 1},   [NX_I8] = {"I8", 1, 1},     [NX_U64] = {"U64", 8, 1},
    [NX_U32] = {"U32", 4, 1},   [NX_U16] = {"U16", 2, 1},   [NX_U8] = {"U8", 1, 1},
    [NX_BOOL] = {"BOOL", 1, 1}, [NX_F8_E5M2] = {"F8_E5M2", 1, 1}, [NX_F8_E4M3] = {"F8_E4M3", 1, 1},
    /* Q8_0: one fp16 scale + 32 int8; Q4_0: one fp16 scale + 16 bytes of nibbles (ggml's). */
    [NX_Q8_0] = {"Q8_0", 34, 32}, [NX_Q4_0] = {"Q4_0", 18, 32},
};

const char *nx_dtype_name(nx_dtype dt) {
    if ((unsigned)dt >= NX_DTYPE_COUNT) return "?";
    return k_dtypes[dt].name;
}

nx_dtype nx_dtype_from_name(const char *name) {
    if (!name) return NX_DTYPE_INVALID;
    for (int i = 1; i < NX_DTYPE_COUNT; i++)
        if (strcmp(k_dtypes[i].name, name) == 0) return (nx_dtype)i;
    return NX_DTYPE_INVALID;
}

size_t nx_dtype_size(nx_dtype dt) {
    if ((unsigned)dt >= NX_DTYPE_COUNT) return 0;
    return k_dtypes[dt].size;
}

size_t nx_dtype_block(nx_dtype dt) {
    if ((unsigned)dt >= NX_DTYPE_COUNT) return 1;
    return k_dtypes[dt].block;
}

static inline uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

float nx_bf16_to_f32(uint16_t h) { return u2f((uint32_t)h << 16); }

uint16_t nx_f32_to_bf16(float f) { return nx__f32_to_bf16(f); }

float nx_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0) {
        if (man == 0) return u2f(sign);
        /* subnormal: value = man * 2^-24 */
        float v = (float)man * 5.9604644775390625e-08f;
        return sign ? -v : v;
    }
    if (exp == 31) return u2f(sign | 0x7f800000u | (man << 13));
    return u2f(sign | ((exp + 112u) << 23) | (man << 13));
}

uint16_t nx_f32_to_f16(float f) {
    uint32_t u = f2u(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);          /* NaN */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);         /* overflow -> inf */
    if (a < 0x38800000u) {                                            /* subnormal or zero */
        /* value in units of 2^-24, rounded to nearest even */
        float v = u2f(a) * 16777216.0f;
        uint32_t m = (uint32_t)v;
        float rem = v - (float)m;
        if (rem > 0.5f || (rem == 0.5f && (m & 1u))) m++;
        return (uint16_t)(sign | m);
    }
    uint32_t r = a + 0xfffu + ((a >> 13) & 1u) - (112u << 23);
    return (uint16_t)(sign | (r >> 13));
}
