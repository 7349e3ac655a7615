/* fuzz_eval_docs.c - arbitrary bytes through the eval module's input handling: the JSON-lines
 * document reader, the Python-string helpers (word count, rstrip, LAMBADA split) on whatever
 * text comes out, and the rolling-window planner with sizes taken from the input. Invariants:
 * accepted documents are consistent, helpers stay in bounds, windows predict every token once. */
#include "eval/eval.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_text(const char *t, size_t n) {
    int64_t w = nx_eval_count_words(t, n);
    NX_ASSERT(w >= 1 && (size_t)w <= n + 1);
    size_t r = nx_eval_rstrip_len(t, n);
    NX_ASSERT(r <= n);
    size_t cl;
    bool need_space;
    nx_eval_lambada_split(t, n, &cl, &need_space);
    NX_ASSERT(cl <= n);
    NX_ASSERT(need_space ? cl == 0 : t[cl] == ' ');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    nx_eval_docs d;
    if (nx_eval_docs_parse((const char *)data, size, true, "fuzz.jsonl", NULL, &d) == NX_OK) {
        NX_ASSERT(d.n > 0);
        for (size_t i = 0; i < d.n; i++) {
            NX_ASSERT(d.texts[i][d.lens[i]] == 0);
            check_text(d.texts[i], d.lens[i]);
        }
        nx_eval_docs_free(&d);
    } else {
        NX_ASSERT(nx_last_error()[0] != 0 && d.n == 0);
    }
    check_text((const char *)data, size);
    if (size >= 3) {
        int64_t n = (int64_t)(data[0] | (data[1] & 0x0F) << 8);   /* up to 4095 tokens */
        int L = 1 + data[2] % 64, stride = 1 + (data[1] >> 4) % L;
        nx_eval_window *w = NULL;
        size_t nw = 0;
        NX_ASSERT(nx_eval_rolling_windows(n, L, stride, &w, &nw) == NX_OK);
        int64_t predicted = 0;
        for (size_t k = 0; k < nw; k++) {
            NX_ASSERT(w[k].start >= 0 && w[k].n_input >= 1 && w[k].n_input <= L);
            NX_ASSERT(w[k].n_pred >= 1 && w[k].n_pred <= w[k].n_input);
            NX_ASSERT(w[k].start + w[k].n_input <= n);   /* inputs stay inside [prefix] + tokens[:n-1] */
            NX_ASSERT(w[k].start + w[k].n_input - w[k].n_pred == predicted);   /* contiguous, in order */
            predicted += w[k].n_pred;
        }
        NX_ASSERT(predicted == n);
        nx_eval_windows_free(w);
    }
    return 0;
}
