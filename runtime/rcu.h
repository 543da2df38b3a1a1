/*
 * RCU for troupe: liburcu's memb flavour behind a few wrappers that
 *  - register any thread that sends (non-worker threads included) on first
 *    use, and unregister it when it exits;
 *  - tell ThreadSanitizer about the happens-before edges liburcu creates with
 *    inline asm and futexes it cannot see (docs: toolchain.md section 4).
 *
 * What RCU protects here: the process-wide system table and, inside a system,
 * the link between an actor reference and its record. A sender validates the
 * reference and pushes into the mailbox inside one read-side section, so a
 * record is reset and reused only after every such sender has finished.
 */
#ifndef TR_RCU_H
#define TR_RCU_H

#include <stdbool.h>
#include <urcu/urcu-memb.h>

#if defined(__SANITIZE_THREAD__)
#define TR__TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TR__TSAN 1
#endif
#endif

#ifdef TR__TSAN
#include <sanitizer/tsan_interface.h>
#define TR__HB_RELEASE(p) __tsan_release((void *)(p))
#define TR__HB_ACQUIRE(p) __tsan_acquire((void *)(p))
#else
#define TR__HB_RELEASE(p) ((void)(p))
#define TR__HB_ACQUIRE(p) ((void)(p))
#endif

/* Sync objects standing for "a grace period elapsed" and "callbacks ran". */
extern char tr__rcu_gp_sync;
extern char tr__rcu_cb_sync;
extern _Thread_local bool tr__rcu_registered;

/* Registers the calling thread with liburcu; idempotent. Blocking (liburcu's registry lock). */
void tr__rcu_register_slow(void);

static inline void tr__rcu_read_lock(void)
{
	if (__builtin_expect(!tr__rcu_registered, 0))
		tr__rcu_register_slow();
	urcu_memb_read_lock();
}

static inline void tr__rcu_read_unlock(void)
{
	TR__HB_RELEASE(&tr__rcu_gp_sync);
	urcu_memb_read_unlock();
}

/* Waits for a grace period. Must not be called inside a read-side section. */
void tr__rcu_synchronize(void);

/* Queues fn(head) after a grace period on the caller's call_rcu thread. */
void tr__rcu_call(struct rcu_head *head, void (*fn)(struct rcu_head *));

/* First statement of every call_rcu callback. liburcu registers its
 * call_rcu threads as readers itself; registering again would be an error,
 * so callbacks that send (taking the read lock) must not try. */
static inline void tr__rcu_cb_enter(struct rcu_head *head)
{
	TR__HB_ACQUIRE(head);
	TR__HB_ACQUIRE(&tr__rcu_gp_sync);
	tr__rcu_registered = true;
}

/* Last statement of every call_rcu callback. */
static inline void tr__rcu_cb_leave(void) { TR__HB_RELEASE(&tr__rcu_cb_sync); }

/* Waits until every callback queued so far (on any call_rcu thread) ran. */
void tr__rcu_barrier(void);

/* Annotations for objects published through cds_lfht: release before the
 * insert, acquire after finding one (match callback, iteration). */
#define TR__LFHT_PUBLISH(obj) TR__HB_RELEASE(obj)
#define TR__LFHT_FOUND(obj) TR__HB_ACQUIRE(obj)

#endif /* TR_RCU_H */
