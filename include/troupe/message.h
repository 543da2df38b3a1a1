/*
 * troupe: messages.
 *
 * A message is a user type tag plus a payload. Payloads up to
 * TR_MSG_INLINE_MAX bytes are copied into the message itself (tr_send);
 * larger ones travel by pointer with their ownership (tr_send_ptr) and a
 * destructor the runtime calls if the receiver does not take the pointer or
 * the message is never delivered.
 *
 * The struct is public so the accessors below inline to a load; its fields
 * are the runtime's. A behaviour may read a message and take its pointer
 * payload; it must not keep the message after returning: the runtime reuses
 * its memory.
 */
#ifndef TROUPE_MESSAGE_H
#define TROUPE_MESSAGE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "troupe/ref.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Destructor for a pointer payload; called at most once, on any thread. */
typedef void (*tr_dtor)(void *ptr);

/* The largest payload tr_send() copies into a message. */
#define TR_MSG_INLINE_MAX 224u

/* Message types from TR_MSG_TYPE_RUNTIME up are the runtime's (monitor and
 * link notifications, see troupe/monitor.h); user sends with such a type
 * are refused with TR_EINVAL. */
#define TR_MSG_TYPE_RUNTIME 0xFFFF0000u

/* Message flags (tr_msg.flags). TR_MSG_F_SYSTEM messages are the runtime's own. */
#define TR_MSG_F_PTR 0x0001u     /* payload is a pointer (tr_send_ptr) */
#define TR_MSG_F_SYSTEM 0x0002u  /* runtime message; never bound, never counted */
#define TR_MSG_F_REQUEST 0x0004u /* sent by tr_ask*: answer with tr_reply */
#define TR_MSG_F_REPLY 0x0008u   /* answers the request with the same corr */
#define TR_MSG_F_TIMER 0x0010u   /* sent by a timer; corr is the timer id */
#define TR_MSG_F_SHARED 0x0080u  /* payload is a tr_shared (channel fan-out) */
#define TR__MSG_F_CLASS_SHIFT 8 /* bits 8..9: pool size class */

/* Intrusive queue link; the runtime's (mailboxes and run queues use it). */
typedef struct tr__link {
	_Atomic(struct tr__link *) next;
} tr__link;

/* A payload shared, immutable, by every delivery of one publish
 * (troupe/channel.h); freed when the last message holding it is done. */
typedef struct tr_shared {
	_Atomic uint32_t refs;
	uint32_t size;
	unsigned char data[];
} tr_shared;

typedef struct tr_msg {
	tr__link link; /* mailbox link: the runtime's; must stay first */
	tr_ref sender;                 /* TR_REF_NONE if sent from outside an actor */
	uint64_t corr;                 /* correlation id of a request or reply */
	uint32_t type;                 /* user type tag */
	uint16_t flags;
	uint16_t size; /* payload size in bytes (inline); 0 for pointer payloads */
	union {
		struct {
			void *ptr;
			tr_dtor dtor;
		} p;
		unsigned char bytes[8]; /* inline payload: really up to the class size */
		uint64_t align_;
	} u;
} tr_msg;

/* Accessors. Thread-safe for the message's receiver; wait-free. */

/* The user type tag given to tr_send/tr_send_ptr. */
static inline uint32_t tr_msg_type(const tr_msg *m) { return m->type; }

/* Who sent it: an actor's reference, or TR_REF_NONE from a non-actor thread. */
static inline tr_ref tr_msg_sender(const tr_msg *m) { return m->sender; }

/* The payload and its size: inline bytes, or a published (shared) payload;
 * NULL/0 for pointer payloads. Read-only. */
static inline const void *tr_msg_data(const tr_msg *m)
{
	if (m->flags & TR_MSG_F_SHARED)
		return ((const tr_shared *)m->u.p.ptr)->data;
	return (m->flags & TR_MSG_F_PTR) ? NULL : (const void *)m->u.bytes;
}
static inline size_t tr_msg_size(const tr_msg *m)
{
	return (m->flags & TR_MSG_F_SHARED) ? ((const tr_shared *)m->u.p.ptr)->size : m->size;
}

/* Pointer payload, still owned by the message (borrowed); NULL if inline. */
static inline void *tr_msg_ptr(const tr_msg *m)
{
	return (m->flags & (TR_MSG_F_PTR | TR_MSG_F_SHARED)) == TR_MSG_F_PTR ? m->u.p.ptr : NULL;
}

/*
 * tr_msg_take: take ownership of a pointer payload. After this the runtime
 * will not call the payload's destructor; the caller owns the pointer.
 * Thread-safe for the receiver, wait-free. Returns the pointer, or NULL if
 * the payload is inline, shared (published) or was already taken.
 */
static inline void *tr_msg_take(tr_msg *m)
{
	void *p;
	if ((m->flags & (TR_MSG_F_PTR | TR_MSG_F_SHARED)) != TR_MSG_F_PTR)
		return NULL;
	p = m->u.p.ptr;
	m->u.p.ptr = NULL;
	return p;
}

/*
 * tr_send: copy `size` bytes at `data` into a message of user type `type` and
 * put it in the mailbox of `to`. The sender recorded is the calling actor, or
 * TR_REF_NONE from a non-actor thread.
 *
 * Thread-safe: any thread may call it, workers and other threads alike.
 * Progress: lock-free (one atomic exchange on the receiver's mailbox), except
 * a non-worker sender to a full bounded mailbox whose policy is
 * TR_OVERFLOW_WAIT: that sender blocks up to the actor's wait timeout.
 * Messages from one sender to one receiver arrive in the order sent; there
 * is no order between different senders, or between one sender's messages
 * to different receivers.
 *
 * From a behaviour, user messages after the first to the same receiver (an
 * actor of the same system) may be held by the worker and published
 * together (one atomic exchange for up to 64): at the latest after the
 * actor has handled 16 more messages, when its run ends, when the thread
 * blocks in troupe, or on tr_flush. Runtime requests (tr_stop,
 * tr_monitor...) are never held.
 *
 * Returns TR_OK once the message is accepted: it will be delivered, or, if
 * the receiver stops first, destroyed and counted as an undelivered dead
 * letter. Errors (nothing is sent):
 *   TR_EINVAL       data is NULL while size > 0, `to` is TR_REF_NONE, or
 *                   type >= TR_MSG_TYPE_RUNTIME
 *   TR_E2BIG        size > TR_MSG_INLINE_MAX (use tr_send_ptr)
 *   TR_EDEAD        `to` is stale or stopped; counted as a dead letter
 *   TR_EFULL        bounded mailbox full (worker sender, or reject policy)
 *   TR_ETIMEDOUT    bounded mailbox stayed full for the wait timeout
 *   TR_ENOTSTARTED  the receiver's system was not started yet
 *   TR_ESHUTDOWN    the system is shutting down; counted as a dead letter
 */
int tr_send(tr_ref to, uint32_t type, const void *data, size_t size);

/*
 * tr_send_ptr: send the pointer *ptr_p as payload, transferring its ownership.
 * On TR_OK the runtime owns the pointer and sets *ptr_p to NULL; the receiver
 * may take it (tr_msg_take), otherwise `dtor` (may be NULL) is called on it
 * after the behaviour returns, or when the message is destroyed undelivered.
 * On any error ownership stays with the caller and *ptr_p is untouched.
 * Thread-safety, progress and errors as tr_send, plus TR_EINVAL if ptr_p is
 * NULL (a NULL *ptr_p is a valid payload).
 */
int tr_send_ptr(tr_ref to, uint32_t type, void **ptr_p, tr_dtor dtor);

#ifdef __cplusplus
}
#endif
#endif /* TROUPE_MESSAGE_H */
