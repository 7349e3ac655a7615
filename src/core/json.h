/*
 * json.h - jansson under the library's allocation hooks.
 *
 * While custom allocation hooks are set, jansson allocates through them (alloc.c), so OOM
 * injection reaches JSON parsing too. jansson then reports an allocation failure inside its
 * lexer like a syntax error ("string expected"), or with no message at all, which would blame
 * a good file. Parsing through nx__json_loadb notes whether an allocation failed during the
 * parse, and nx__json_oom turns that into NX_ERR_NOMEM.
 * Depends on core and jansson.
 */
#ifndef NX_CORE_JSON_H
#define NX_CORE_JSON_H

#include "core.h"

#include <jansson.h>

/* json_loadb that records whether any allocation failed while it ran (this thread). */
json_t *nx__json_loadb(const char *buf, size_t len, size_t flags, json_error_t *error);
/* After a failed nx__json_loadb: when an allocation failed, records the error for `name` and
 * returns NX_ERR_NOMEM; otherwise returns NX_OK and the caller reports the syntax error. */
nx_status nx__json_oom(const char *name);
/* Routes jansson's allocations to the hooks (on) or back to malloc/free (off); alloc.c. */
void nx__json_route_alloc(bool on);

#endif
