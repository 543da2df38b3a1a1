/*
 * troupe: monitors and links.
 *
 * A monitor is one-way: the watcher gets a TR_MSG_DOWN message when the
 * watched actor stops, with the reason. A link is two-way: when one side
 * stops with a reason other than TR_OK, the other stops too, with the same
 * reason, unless it traps exits, in which case it gets a TR_MSG_EXIT
 * message instead. Both are set up with runtime messages that bypass
 * mailbox bounds and are never dropped; a monitor or link to an actor that
 * is already gone answers at once (reason TR_EDEAD, "no such actor").
 *
 * Order at a stop: the actor's cleanup hook runs first, then its watchers
 * and links are notified, so a DOWN means the cleanup has finished.
 *
 * Stop reasons everywhere: TR_OK (normal stop), TR_ESHUTDOWN (the system
 * shut down), TR_EKILLED (tr_kill), TR_EDEAD (was already gone), or the
 * failure code a behaviour returned / passed to tr_stop_self.
 */
#ifndef TROUPE_MONITOR_H
#define TROUPE_MONITOR_H

#include <stdbool.h>

#include "troupe/message.h"
#include "troupe/ref.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TR_MSG_DOWN (TR_MSG_TYPE_RUNTIME + 1u) /* payload: tr_down */
#define TR_MSG_EXIT (TR_MSG_TYPE_RUNTIME + 2u) /* payload: tr_down */

/* Payload of TR_MSG_DOWN and TR_MSG_EXIT. */
typedef struct tr_down {
	tr_ref who;  /* the actor that stopped */
	int reason;
} tr_down;

/* The tr_down of a TR_MSG_DOWN / TR_MSG_EXIT message; NULL for others. */
static inline const tr_down *tr_msg_down(const tr_msg *m)
{
	return (m->type == TR_MSG_DOWN || m->type == TR_MSG_EXIT) ? (const tr_down *)m->u.bytes
								   : (const tr_down *)0;
}

/*
 * tr_monitor: the calling actor will get one TR_MSG_DOWN when `target`
 * stops (at once if it already has). Monitoring the same target twice
 * gives two notifications. From inside an actor; lock-free.
 * Errors: TR_ENOTACTOR, TR_EINVAL (TR_REF_NONE or self), TR_ENOMEM.
 */
int tr_monitor(tr_ref target);

/* tr_demonitor: drop one monitor of `target` set by the caller (no-op if
 * there is none); a DOWN already queued still arrives.
 * Errors: TR_ENOTACTOR, TR_EINVAL. */
int tr_demonitor(tr_ref target);

/*
 * tr_link: link the calling actor and `target` (idempotent). If the target
 * is already gone, the caller receives the exit signal at once (reason
 * TR_EDEAD). From inside an actor; lock-free.
 * Errors: TR_ENOTACTOR, TR_EINVAL (TR_REF_NONE or self), TR_ENOMEM.
 */
int tr_link(tr_ref target);

/* tr_unlink: remove a link (both sides). Errors: TR_ENOTACTOR, TR_EINVAL. */
int tr_unlink(tr_ref target);

/* tr_trap_exit: whether the calling actor turns exit signals from linked
 * actors into TR_MSG_EXIT messages instead of stopping. A trapping actor
 * also gets TR_MSG_EXIT (reason TR_OK) when a linked actor stops normally,
 * as in Erlang. Errors: TR_ENOTACTOR. */
int tr_trap_exit(bool on);

/*
 * tr_kill: stop `target` at once with reason TR_EKILLED: it does not handle
 * the messages queued before (they become undelivered dead letters) and
 * cannot trap it. Accepted before tr_system_start (it takes effect once the
 * system runs). Any thread; lock-free.
 * Errors: TR_EINVAL, TR_EDEAD, TR_ESHUTDOWN.
 */
int tr_kill(tr_ref target);

#ifdef __cplusplus
}
#endif
#endif /* TROUPE_MONITOR_H */
