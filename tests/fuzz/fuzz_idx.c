/* fuzz_idx.c - libFuzzer target for the indexed-dataset reader and the sample order built on
 * it. Input: u32 little-endian length L, then L bytes of .idx, then the .bin bytes. Any input
 * must give NX_OK or a clean error; an accepted dataset must read back within bounds. */
#include "data/data.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 4) return 0;
    uint32_t L;
    memcpy(&L, data, 4);
    if (L > size - 4) L = (uint32_t)(size - 4);
    const uint8_t *idx = data + 4, *bin = data + 4 + L;
    size_t bin_len = size - 4 - L;
    nx_indexed *ds = NULL;
    if (nx__indexed_open_mem(idx, L, bin, bin_len, &ds) != NX_OK) return 0;
    nx_indexed_info info;
    nx_indexed_get_info(ds, &info);
    int32_t buf[256];
    for (uint64_t i = 0; i < info.n_items && i < 64; i++) {
        uint64_t n = (uint64_t)nx_indexed_item_size(ds, i);
        uint64_t c = n < 256 ? n : 256;
        (void)nx_indexed_read(ds, i, 0, c, buf);
        (void)nx_indexed_read(ds, i, n, 1, buf);   /* out of range: must fail cleanly */
    }
    for (uint64_t d = 0; d <= info.n_docs && d < 64; d++) {
        uint64_t a, b;
        (void)nx_indexed_doc_items(ds, d, &a, &b);
    }
    (void)nx_indexed_verify(ds, 50277, NULL);
    if (info.n_tokens > 0 && info.n_items < 4096 && info.dtype_code != NX_IDX_F32 && info.dtype_code != NX_IDX_F64) {
        nx_sample_opts o = {.seq_length = 3, .num_samples = 8, .seed = 1234};
        nx_sample_index *si = NULL;
        if (nx_sample_index_build(ds, &o, &si) == NX_OK) {
            int32_t smp[4];
            for (uint64_t i = 0; i < nx_sample_index_count(si) && i < 16; i++) (void)nx_sample_index_get(si, i, smp);
            nx_sample_index_free(si);
        }
    }
    nx_indexed_free(ds);
    return 0;
}
