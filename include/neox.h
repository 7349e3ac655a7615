/*
 * neox.h - public API of libneox, the EleutherAI open-model stack in C.
 *
 * This umbrella header includes every public module header. Each module header
 * states ownership and lifetime for every pointer it hands out. Unstable API is
 * kept behind NX_EXPERIMENTAL.
 */
#ifndef NEOX_H
#define NEOX_H

#include "neox/core.h"
#if __has_include("neox/io.h")
#include "neox/io.h"
#endif
#if __has_include("neox/tokenizer.h")
#include "neox/tokenizer.h"
#endif
#if __has_include("neox/model.h")
#include "neox/model.h"
#endif
#if __has_include("neox/data.h")
#include "neox/data.h"
#endif
#if __has_include("neox/train.h")
#include "neox/train.h"
#endif
#if __has_include("neox/dist.h")
#include "neox/dist.h"
#endif
#if __has_include("neox/eval.h")
#include "neox/eval.h"
#endif
#if __has_include("neox/serve.h")
#include "neox/serve.h"
#endif

#endif /* NEOX_H */
