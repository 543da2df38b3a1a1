/*
 * troupe: the name registry.
 *
 * Names map to actors, per system, in an RCU-protected lock-free hash table
 * (liburcu's cds_lfht): lookups take no lock and never block registration.
 * A name belongs to its actor's lifetime: once the actor stops, lookups no
 * longer find it and the name can be taken again. A reference returned by a
 * lookup is as safe as any other: if the actor stops meanwhile, sending
 * through it is a counted dead letter.
 *
 * Names are 1..TR_NAME_MAX bytes of any content; they are copied.
 */
#ifndef TROUPE_REGISTRY_H
#define TROUPE_REGISTRY_H

#include "troupe/actor.h"
#include "troupe/ref.h"
#include "troupe/system.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TR_NAME_MAX 255u

/*
 * tr_register: bind `name` to `ref` in `sys`. Thread-safe, lock-free.
 * Errors: TR_EINVAL (NULL, empty or too long name, ref of another system),
 * TR_EEXIST (the name is bound to a live actor, or being spawned by
 * tr_spawn_named), TR_EDEAD (ref is stale), TR_ESHUTDOWN, TR_ENOMEM.
 */
int tr_register(tr_system *sys, const char *name, tr_ref ref);

/*
 * tr_unregister: remove the binding of `name`. Thread-safe, lock-free
 * (the entry is reclaimed after a grace period).
 * Errors: TR_EINVAL, TR_ENOENT (no binding to a live actor).
 */
int tr_unregister(tr_system *sys, const char *name);

/*
 * tr_whereis: the live actor bound to `name`. Thread-safe, wait-free
 * readers (RCU), no lock. Errors: TR_EINVAL, TR_ENOENT.
 */
int tr_whereis(tr_system *sys, const char *name, tr_ref *out);

/*
 * tr_spawn_named: spawn or get. If `name` is bound to a live actor, store
 * it in *out; otherwise spawn one from `opts`, bind it and store it. Many
 * threads asking at once for the same name all get the same single actor:
 * one claims the name (an atomic insert), the others wait for its spawn
 * (briefly yielding, outside any lock). Thread-safe; lock-free lookups.
 * The init hook of the spawned actor must not ask for its own name (the
 * name is pending until init returns: it would wait for itself).
 * Errors: those of tr_spawn_opts and tr_register (never TR_EEXIST).
 */
int tr_spawn_named(tr_system *sys, const char *name, const tr_actor_opts *opts, tr_ref *out);

#ifdef __cplusplus
}
#endif
#endif /* TROUPE_REGISTRY_H */
