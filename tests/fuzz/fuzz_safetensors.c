/* fuzz_safetensors.c - feeds arbitrary bytes to the safetensors parser. Every accepted
 * file must describe tensors that lie inside the input, so each one is read in full
 * (ASan flags any out-of-bounds view) and float tensors are converted to f32. */
#include "io/io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    nx_tensorset *ts = nx__tensorset_new();
    if (!ts) return 0;
    if (nx__safetensors_parse(ts, data, size, "fuzz.safetensors") == NX_OK) {
        uint8_t acc = 0;
        for (size_t i = 0; i < nx_tensorset_count(ts); i++) {
            const nx_tensor_info *t = nx_tensorset_at(ts, i);
            NX_ASSERT(nx_tensorset_find(ts, t->name) == t);
            NX_ASSERT(t->nbytes == nx_tensor_numel(t) * nx_dtype_size(t->dtype));
            const uint8_t *p = t->data;
            NX_ASSERT(t->nbytes == 0 || (p >= data && p + t->nbytes <= data + size));
            for (size_t j = 0; j < t->nbytes; j++) acc ^= p[j];
            if (t->dtype == NX_F32 || t->dtype == NX_F16 || t->dtype == NX_BF16 || t->dtype == NX_F64 ||
                t->dtype == NX_F8_E5M2 || t->dtype == NX_F8_E4M3) {
                size_t n = nx_tensor_numel(t);
                float *dst = nx__malloc((n ? n : 1) * sizeof(float));
                if (dst) {
                    NX_ASSERT(nx_tensor_to_f32(t, dst) == NX_OK);
                    nx__free(dst);
                }
            }
        }
        (void)acc;
        (void)nx_tensorset_metadata(ts, "format");
    } else {
        NX_ASSERT(nx_last_error()[0] != 0);
    }
    nx_tensorset_free(ts);
    return 0;
}
