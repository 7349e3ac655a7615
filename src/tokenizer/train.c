#include "tokenizer/tokenizer_int.h"
NX_API nx_status nx_bpe_train_files(const char *const *files, size_t n_files, const nx_bpe_train_opts *opts,
                                    const char *out_path) {
    return nx__error(NX_ERR_UNSUPPORTED, "not yet");
}
