/*
 * Outbox: the sends a worker holds back while it runs an actor, so that
 * many messages to one mailbox cost one atomic exchange.
 *
 * A behaviour that sends a burst (a producer, a publisher fanning out to
 * subscribers, a stage forwarding what it handled) used to make one exchange
 * on the receiver's mailbox head per message, and when two cores send to one
 * receiver that line moved between them on every message. Here a message a
 * worker sends to an actor of its own system while running an actor is
 * linked onto a per-receiver chain in the worker's outbox (the first one
 * to each receiver goes out at once, so single sends cost nothing extra;
 * runtime messages, such as stop and monitor requests, also go out at once,
 * behind whatever is held for the same receiver). A chain is pushed
 * with one exchange when it holds TR__OUT_CHAIN messages or another receiver
 * needs its slot; everything is pushed after TR__OUT_HOLD handled messages,
 * when the run ends, before the runtime blocks the thread (futex), and on
 * tr_flush.
 * Order per sender and receiver is kept: one receiver's messages stay in one
 * chain, and chains to it are pushed oldest first.
 *
 * No read-side section stays open while messages are held (user code runs
 * in between, and might wait for a thread that waits for a grace period).
 * Each chain remembers its receiver's ident instead, and is pushed only if
 * the receiver still has it, inside a fresh section; otherwise its messages
 * are dead letters, as if the receiver had died with them queued.
 * Graceful shutdown waits, after its grace period, for every worker's outbox
 * to be flushed once (tr__outbox_wait), so messages accepted before it
 * began still arrive before the stop requests.
 *
 * Owner only, except `gen`: odd while something is held, so that shutdown
 * can wait for the next flush.
 */
#ifndef TR_OUTBOX_H
#define TR_OUTBOX_H

#include <stdbool.h>
#include <stdint.h>

#include "troupe/message.h"

#define TR__OUT_SLOTS 256u /* receivers held at once, by record address */
#define TR__OUT_CHAIN 64u  /* messages per receiver before an early push */
#define TR__OUT_HOLD 16u   /* handled messages between two flushes */

struct tr__actor;
struct tr__worker;

typedef struct tr__outq {
	struct tr__actor *to; /* NULL: slot free */
	uint64_t id;          /* to's ident when the slot was claimed */
	tr_msg *first, *last; /* the chain held, if n > 0 */
	uint32_t n;
} tr__outq;

typedef struct tr__outbox {
	bool on;   /* holding is allowed (the worker is running an actor) */
	bool held; /* some message was held since the last flush */
	uint16_t nused;
	_Atomic uint32_t gen; /* odd while something is held */
	uint16_t used[TR__OUT_SLOTS]; /* claimed slots, in the order claimed */
	tr__outq q[TR__OUT_SLOTS];
} tr__outbox;

/* Holds message `m` for actor `a` of the worker's system. Inside the
 * sender's read-side section, `a` resolved, `m` fully built. Lock-free
 * (wait-free apart from the pushes it may make). */
void tr__outbox_add(struct tr__worker *w, struct tr__actor *a, tr_msg *m);

/* Pushes what is held for `a`, if anything. Inside a read-side section.
 * Lock-free. */
void tr__outbox_push_to(struct tr__worker *w, struct tr__actor *a);

/* Pushes everything held, oldest chain first. Outside any read-side
 * section. Lock-free. */
void tr__outbox_flush(struct tr__worker *w);

/* Waits until worker `w` has flushed what it held when this was called.
 * Any thread but `w`; blocking (naps). */
void tr__outbox_wait(struct tr__worker *w);

#endif /* TR_OUTBOX_H */
