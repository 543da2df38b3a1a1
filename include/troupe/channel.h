/*
 * troupe: publish/subscribe channels.
 *
 * A channel is a named topic ("logs.error") in a system. Publishing takes
 * no lock: the subscriber set is an immutable array read under RCU and
 * replaced copy-on-write by (un)subscribe, the old one reclaimed after a
 * grace period. Fan-out is zero-copy: every subscriber receives a message
 * pointing at one immutable, reference-counted payload, freed when the last
 * subscriber is done with it (tr_msg_data/tr_msg_size read it as usual).
 *
 * Order: messages from one publisher on one channel reach each subscriber
 * in publish order. After tr_unsubscribe returns, publishes that happen
 * after it (in the C11 sense: ordered by a message, a lock, a join...) do
 * not reach the actor. A subscriber that stops is dropped from the set
 * automatically. Each subscription delivers: an actor subscribed to a
 * channel and to a pattern that matches it receives each publish twice.
 *
 * Channel names are 1..TR_NAME_MAX bytes without '*' or '#'.
 *
 * Patterns (tr_subscribe_pattern): topics are dot-separated words; `*`
 * matches exactly one word and `#` any number of words, zero included, so
 * "logs.*" receives "logs.error" and "logs.#" also "logs.db.slow".
 *
 * Full bounded mailboxes: per subscription, TR_SUB_DROP drops the message
 * for that subscriber and counts it (tr_subscription_dropped), while
 * TR_SUB_REPORT makes tr_publish report it (TR_EFULL and the count). A
 * publisher never blocks.
 */
#ifndef TROUPE_CHANNEL_H
#define TROUPE_CHANNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "troupe/ref.h"
#include "troupe/system.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tr_channel tr_channel;

typedef enum tr_sub_policy {
	TR_SUB_DROP = 0,
	TR_SUB_REPORT = 1,
} tr_sub_policy;

/* What one tr_publish did. */
typedef struct tr_pub_result {
	uint32_t delivered; /* subscribers whose mailbox took the message */
	uint32_t dropped;   /* full mailboxes, TR_SUB_DROP subscriptions */
	uint32_t refused;   /* full mailboxes, TR_SUB_REPORT subscriptions */
	uint32_t gone;      /* subscribers found stopped (now removed) */
} tr_pub_result;

/*
 * tr_channel_open: the channel named `name` in `sys`, created on first use
 * (channels live as long as the system). Thread-safe; lock-free lookup,
 * creation races resolved by one atomic insert.
 * Errors: TR_EINVAL (NULL, empty or too long name, '*' or '#' in it),
 * TR_ENOMEM, TR_ESHUTDOWN.
 */
int tr_channel_open(tr_system *sys, const char *name, tr_channel **out);

/*
 * tr_channel_find: the existing channel named `name`, without creating one.
 * Thread-safe, lock-free (an RCU lookup).
 * Errors: TR_EINVAL (NULL, bad name), TR_ENOENT (no such channel).
 */
int tr_channel_find(tr_system *sys, const char *name, tr_channel **out);

/* tr_channel_name: the channel's name. Thread-safe, wait-free. */
const char *tr_channel_name(const tr_channel *ch);

/*
 * tr_subscribe: add `ref` to the channel's subscribers (idempotent: a
 * second call changes the policy). Thread-safe; blocking on the channel's
 * update lock (readers never take it).
 * Errors: TR_EINVAL (also a ref of another system), TR_EDEAD (stale ref),
 * TR_ENOMEM.
 */
int tr_subscribe(tr_channel *ch, tr_ref ref, tr_sub_policy policy);

/* tr_unsubscribe: remove `ref`. Same contract; TR_ENOENT if not subscribed. */
int tr_unsubscribe(tr_channel *ch, tr_ref ref);

/* tr_subscribe_pattern / tr_unsubscribe_pattern: the same for every channel
 * of `sys` whose name matches `pattern`, present and future. */
int tr_subscribe_pattern(tr_system *sys, const char *pattern, tr_ref ref, tr_sub_policy policy);
int tr_unsubscribe_pattern(tr_system *sys, const char *pattern, tr_ref ref);

/* tr_topic_match: whether `topic` matches `pattern` (the rules above). */
bool tr_topic_match(const char *pattern, const char *topic);

/*
 * tr_publish: send a copy of (type, data, size) to every current subscriber
 * (exact and pattern). The payload is copied once, whatever the number of
 * subscribers; any size below 4 GiB. Thread-safe, lock-free (allocates the
 * shared payload). Fills *res if not NULL; a delivery that fails for lack
 * of memory counts as refused.
 * Returns TR_OK (also with no subscriber), TR_EFULL if a TR_SUB_REPORT
 * subscriber refused it, or TR_EINVAL, TR_ENOMEM, TR_ENOTSTARTED,
 * TR_ESHUTDOWN.
 */
int tr_publish(tr_channel *ch, uint32_t type, const void *data, size_t size, tr_pub_result *res);

/* tr_subscription_dropped: messages dropped for `ref` on `ch` by TR_SUB_DROP
 * since it subscribed (0 if not subscribed). Thread-safe, lock-free. */
uint64_t tr_subscription_dropped(tr_channel *ch, tr_ref ref);

/* tr_pattern_dropped: the same for the pattern subscription of `ref`. */
uint64_t tr_pattern_dropped(tr_system *sys, const char *pattern, tr_ref ref);

#ifdef __cplusplus
}
#endif
#endif /* TROUPE_CHANNEL_H */
