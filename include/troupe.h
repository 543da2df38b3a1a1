/*
 * troupe: a C11 actor runtime. The one header to include.
 *
 * Conventions: public names are tr_* and TR_*; functions return 0 or a
 * negative TR_E* code (troupe/error.h); every function's comment states its
 * thread-safety, progress guarantee and return values.
 */
#ifndef TROUPE_H
#define TROUPE_H

#include "troupe/error.h"
#include "troupe/ref.h"
#include "troupe/message.h"
#include "troupe/system.h"
#include "troupe/actor.h"
#include "troupe/timer.h"
#include "troupe/ask.h"
#include "troupe/monitor.h"
#include "troupe/supervisor.h"
#include "troupe/registry.h"
#include "troupe/channel.h"

#define TROUPE_VERSION_MAJOR 0
#define TROUPE_VERSION_MINOR 1
#define TROUPE_VERSION_PATCH 0

#endif /* TROUPE_H */
