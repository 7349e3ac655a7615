/* torchbin.c - PyTorch zip-format checkpoint reader (placeholder until the reader lands). */
#include "io.h"

nx_status nx__torchbin_read_into(nx_tensorset *ts, const char *path) {
    (void)ts;
    return nx__error(NX_ERR_UNSUPPORTED, "%s: PyTorch .bin checkpoints cannot be read by this build", path);
}
