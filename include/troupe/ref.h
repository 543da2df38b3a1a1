/*
 * troupe: actor references.
 *
 * A tr_ref names one actor incarnation. It is a generation-checked id, not a
 * pointer: it stays safe to use after the actor has stopped, after its slot
 * was reused by another actor, and after its system was destroyed. Sending
 * through a stale reference returns TR_EDEAD and counts a dead letter; it
 * never touches freed memory.
 *
 * Layout (the runtime's business, stated so users can trust copies):
 * 64 bits = system slot (8) | generation (32) | actor slot (24).
 * Copy it by value; compare with tr_ref_eq().
 */
#ifndef TROUPE_REF_H
#define TROUPE_REF_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tr_ref {
	uint64_t id;
} tr_ref;

/* The reference that names no actor (the sender of messages from non-actor threads). */
#define TR_REF_NONE ((tr_ref){0})

static inline bool tr_ref_eq(tr_ref a, tr_ref b) { return a.id == b.id; }
static inline bool tr_ref_is_none(tr_ref r) { return r.id == 0; }

#ifdef __cplusplus
}
#endif
#endif /* TROUPE_REF_H */
