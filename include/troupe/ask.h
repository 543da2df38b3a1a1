/*
 * troupe: request/response.
 *
 * tr_ask sends a request and names a continuation that runs in the asking
 * actor when the outcome is known. Exactly one outcome reaches it: the
 * reply; TR_ETIMEDOUT when no reply came within the request's timeout; or
 * TR_EDEAD ("receiver down") when the target was gone at send time or
 * stopped before answering: with the request still queued, while handling
 * it, or later while keeping it for a deferred answer (a server keeps up to
 * TR_OPEN_REQUESTS_MAX unanswered requests; older ones time out). A reply arriving after the outcome was decided
 * is discarded and counted (tr_stats.late_replies). Every request has a
 * timeout: the system default (tr_config.ask_timeout_ms) or the call's.
 *
 * The target answers with tr_reply(request, ...) without knowing who asked;
 * a 64-bit correlation id in the message header ties the two together.
 * To answer later, keep tr_msg_reply_to(request) and use tr_reply_to().
 *
 * Threads that are not actors ask with tr_ask_future and get a tr_future:
 * wait on it with a deadline, poll it, or give it a completion callback;
 * combine several with tr_future_wait_all / tr_future_wait_any.
 */
#ifndef TROUPE_ASK_H
#define TROUPE_ASK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "troupe/message.h"
#include "troupe/ref.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Continuation of a request. Runs in the asking actor, like a behaviour
 * (one message at a time, same state). `status` is TR_OK with `reply`
 * valid until it returns (take a pointer payload with tr_msg_take), or
 * TR_ETIMEDOUT / TR_EDEAD / TR_ESHUTDOWN with `reply` NULL. Its return value
 * is a behaviour's: non-zero fails the actor.
 */
typedef int (*tr_reply_fn)(void *state, void *ctx, int status, tr_msg *reply);

#define TR_OPEN_REQUESTS_MAX 1024u

/*
 * tr_ask: send a copy of (type, data, size) to `to` as a request. Must be
 * called from inside an actor (behaviour, continuation or init hook).
 * timeout_ns 0: the system default. Lock-free.
 * Returns TR_OK when the request is registered: `fn` will run exactly once.
 * Errors (fn is never called): TR_ENOTACTOR, TR_EINVAL (fn NULL, to NONE,
 * bad data/type), TR_E2BIG, TR_ENOMEM.
 */
int tr_ask(tr_ref to, uint32_t type, const void *data, size_t size, uint64_t timeout_ns,
	   tr_reply_fn fn, void *ctx);

/* tr_ask_ptr: tr_ask with a pointer payload, ownership as tr_send_ptr
 * (taken on TR_OK; if the target is already gone, the runtime destroys it). */
int tr_ask_ptr(tr_ref to, uint32_t type, void **ptr_p, tr_dtor dtor, uint64_t timeout_ns,
	       tr_reply_fn fn, void *ctx);

/* true if `m` is a request (tr_ask*, tr_ask_future) that expects a reply. */
static inline bool tr_msg_is_request(const tr_msg *m) { return (m->flags & TR_MSG_F_REQUEST) != 0; }

/* Where to send the reply to a request; copyable, valid after the
 * behaviour returned. */
typedef struct tr_reply_addr {
	uint64_t to;   /* the asking actor, or 0 when a future asked */
	uint64_t corr; /* correlation id (a future's id when `to` is 0) */
} tr_reply_addr;

/* tr_msg_reply_to: the reply address of a request ({0, 0} if `m` is not one). */
tr_reply_addr tr_msg_reply_to(const tr_msg *m);

/*
 * tr_reply / tr_reply_to: answer a request with a copy of (type, data,
 * size). Any thread. Lock-free. Answering twice is allowed; the asker keeps
 * the first answer and counts the others as late replies.
 * Errors: TR_EINVAL (not a request, bad data/type), TR_E2BIG, TR_EDEAD (the
 * asker is gone; counted as a dead letter), TR_ESHUTDOWN, TR_ENOMEM.
 */
int tr_reply(const tr_msg *request, uint32_t type, const void *data, size_t size);
int tr_reply_to(tr_reply_addr to, uint32_t type, const void *data, size_t size);
/* Pointer payload, ownership as tr_send_ptr. */
int tr_reply_ptr(tr_reply_addr to, uint32_t type, void **ptr_p, tr_dtor dtor);

/* ---------------------------------------------------------------- futures */

typedef struct tr_future tr_future;

/* Completion callback: runs once, on the thread that completes the future
 * (a worker, the timer thread, or the caller of tr_future_then if it was
 * already complete). Keep it short; do not destroy the future in it. */
typedef void (*tr_future_fn)(void *ctx, tr_future *f, int status);

/*
 * tr_ask_future: send a request from any thread; store a future for its
 * outcome in *out. timeout_ns 0: the system default. Lock-free except the
 * timer service's short lock. If the target is already gone the future is
 * completed with TR_EDEAD at once (and TR_OK is returned).
 * Errors (no future): TR_EINVAL, TR_E2BIG, TR_ENOTSTARTED, TR_ESHUTDOWN,
 * TR_ENOMEM.
 */
int tr_ask_future(tr_ref to, uint32_t type, const void *data, size_t size, uint64_t timeout_ns,
		  tr_future **out);

/*
 * tr_future_wait: wait up to wait_ns (< 0: forever, 0: poll) for the
 * outcome. Any thread; blocking. Returns the outcome (TR_OK: reply
 * available; TR_ETIMEDOUT: the request timed out; TR_EDEAD: receiver down;
 * TR_ESHUTDOWN), or TR_EAGAIN if it is still pending after wait_ns.
 */
int tr_future_wait(tr_future *f, int64_t wait_ns);

/* tr_future_poll: tr_future_wait(f, 0). */
int tr_future_poll(tr_future *f);

/* tr_future_reply: the reply message once the outcome is TR_OK, else NULL.
 * Owned by the future: valid until tr_future_destroy. */
tr_msg *tr_future_reply(tr_future *f);

/*
 * tr_future_then: call fn(ctx, f, status) once the future completes (at
 * once, on this thread, if it already has). At most one callback per
 * future. Lock-free. Errors: TR_EINVAL (NULL, or a callback already set).
 */
int tr_future_then(tr_future *f, tr_future_fn fn, void *ctx);

/*
 * tr_future_wait_all: wait until every future in fs[0..n) has completed, or
 * wait_ns passed (< 0: forever). Each keeps its own outcome (results in
 * order: fs[i] answers request i). Returns TR_OK or TR_EAGAIN.
 */
int tr_future_wait_all(tr_future *const *fs, size_t n, int64_t wait_ns);

/*
 * tr_future_wait_any: wait until at least one future in fs[0..n) has
 * completed; store the lowest such index in *index. Skips NULL entries, so
 * "as completed" is: call, handle fs[i], destroy it and set fs[i] = NULL,
 * repeat. Returns TR_OK, TR_EAGAIN after wait_ns, or TR_EINVAL (no future).
 */
int tr_future_wait_any(tr_future *const *fs, size_t n, int64_t wait_ns, size_t *index);

/* tr_future_destroy: free the future (and its reply); a still pending
 * request is abandoned: its later outcome is discarded. Sets *f to NULL.
 * Futures live in their target's system: destroy them before the system
 * (its shutdown completes any still pending with TR_EDEAD or
 * TR_ESHUTDOWN, so nobody waits forever). */
void tr_future_destroy(tr_future **f);

#ifdef __cplusplus
}
#endif
#endif /* TROUPE_ASK_H */
