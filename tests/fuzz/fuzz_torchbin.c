/* fuzz_torchbin.c - libFuzzer target for the PyTorch .bin reader: the whole zip + pickle +
 * tensor-view path on the input as a file, and the unpickler alone on the input as a
 * data.pkl stream. Whatever loads must be readable in full (ASan checks the bounds). */
/* The library archive is built without coverage instrumentation (CMake gives
 * -fsanitize=fuzzer to this file only), so the reader's sources are compiled into this unit
 * for libFuzzer to see their branches; the archive's copies of these objects are then never
 * pulled in by the linker. */
#include "io/zip.c"
#include "io/pickle.c"
#include "io/torchbin.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    nx_tensorset *ts = nx__tensorset_new();
    if (ts && nx__torchbin_parse(ts, data, size, "fuzz.bin") == NX_OK) {
        volatile uint8_t sink = 0;
        for (size_t i = 0; i < nx_tensorset_count(ts); i++) {
            const nx_tensor_info *t = nx_tensorset_at(ts, i);
            for (size_t j = 0; j < t->nbytes; j++) sink ^= ((const uint8_t *)t->data)[j];
        }
        (void)sink;
    }
    nx_tensorset_free(ts);
    nx_pickle *pk = NULL;
    nx_pk *root = NULL;
    if (nx__pickle_load(data, size, "fuzz.pkl", &pk, &root) == NX_OK) nx__pickle_free(pk);
    return 0;
}
