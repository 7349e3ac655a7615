/* fuzz_tokenizer_load.c - tokenizer.json parsing: any bytes must load or fail cleanly; a
 * tokenizer that loads must encode and decode without crashing. */
#include "neox.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    nx_tokenizer *tok = NULL;
    if (nx_tokenizer_load_json((const char *)data, size, "fuzz.json", &tok) != NX_OK) return 0;
    static const char sample[] = "Hello  world <|endoftext|> caf\xC3\xA9 1111 \xE4\xB8\x81 a\x00" "b";
    nx_ids ids = {0};
    nx_text txt = {0};
    if (nx_tokenizer_encode(tok, sample, sizeof sample - 1, 0, &ids) == NX_OK)
        nx_tokenizer_decode(tok, ids.data, ids.len, 0, &txt);
    int32_t probe[] = {0, 1, 2, 255, 256, nx_tokenizer_vocab_size(tok) - 1, nx_tokenizer_vocab_size(tok), -1};
    nx_tokenizer_decode(tok, probe, sizeof probe / sizeof probe[0], NX_TOK_SKIP_SPECIAL, &txt);
    for (size_t i = 0; i < sizeof probe / sizeof probe[0]; i++) nx_tokenizer_id_to_token(tok, probe[i]);
    nx_ids_free(&ids);
    nx_text_free(&txt);
    nx_tokenizer_free(tok);
    return 0;
}
