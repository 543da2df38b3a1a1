/*
 * troupe: timers.
 *
 * A timer sends a message to an actor after a delay, or every period. One
 * timer service per system keeps a min-heap of deadlines and a thread that
 * sleeps until the earliest one, so armed timers cost no CPU while they
 * wait. A timer never fires before its deadline.
 *
 * Periodic timers skip ticks that fell behind instead of bursting: a tick
 * is sent only if the previous one was already handled, and the next
 * deadline is the first multiple of the period after now. A slow actor gets
 * at most one tick in its mailbox per timer.
 *
 * A timer belongs to its target: when the target stops, its timers are
 * cancelled (a pending tick is dropped, not counted as a dead letter).
 * Timer messages are not subject to the target's mailbox bound (they are
 * rate-limited by construction); their sender is the actor that armed the
 * timer, or TR_REF_NONE.
 */
#ifndef TROUPE_TIMER_H
#define TROUPE_TIMER_H

#include <stddef.h>
#include <stdint.h>

#include "troupe/ref.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tr_timer {
	uint64_t id;
} tr_timer;

#define TR_TIMER_NONE ((tr_timer){0})

/*
 * tr_send_after: send a copy of (type, data, size) to `to` once, `delay_ns`
 * from now. Stores the timer in *out if out is not NULL.
 * Thread-safe; blocking only on the timer service's lock (a short critical
 * section, never on the target).
 * Errors: TR_EINVAL (TR_REF_NONE, data NULL with size, reserved type),
 * TR_E2BIG (size > TR_MSG_INLINE_MAX), TR_EDEAD (target stale or stopped),
 * TR_ENOTSTARTED, TR_ESHUTDOWN, TR_ENOMEM.
 */
int tr_send_after(tr_ref to, uint64_t delay_ns, uint32_t type, const void *data, size_t size,
		  tr_timer *out);

/*
 * tr_send_every: as tr_send_after, repeating every `period_ns` (> 0) until
 * cancelled or the target stops; the first tick comes one period from now.
 */
int tr_send_every(tr_ref to, uint64_t period_ns, uint32_t type, const void *data, size_t size,
		  tr_timer *out);

/*
 * tr_timer_cancel: stop a timer. On TR_OK the target gets no message from
 * it that it has not handled yet: a tick already in its mailbox is dropped
 * when it comes up. Thread-safe, lock-free.
 * Errors: TR_EDEAD if there is nothing to cancel (a one-shot timer already
 * delivered, a timer cancelled before, or TR_TIMER_NONE).
 */
int tr_timer_cancel(tr_timer t);

#ifdef __cplusplus
}
#endif
#endif /* TROUPE_TIMER_H */
