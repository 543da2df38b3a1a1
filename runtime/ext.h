/*
 * Per-actor conversation state: outstanding requests, watchers, links.
 * Allocated on first use, touched only by the thread running the actor
 * (other actors change it by sending runtime messages), freed at stop.
 */
#ifndef TR_EXT_H
#define TR_EXT_H

#include "internal.h"

/* An outstanding request of this actor. Its correlation id is
 * seq << TR__PEND_BITS | index, so a reply finds its entry in O(1) and a
 * reply to an entry reused since carries the wrong seq. */
#define TR__PEND_BITS 20u
#define TR__PEND_MAX (1u << TR__PEND_BITS)

typedef struct tr__pending {
	uint64_t corr; /* 0 while the entry is free */
	uint64_t deadline;
	tr_reply_fn fn;
	void *ctx;
	uint32_t heap_pos;
	uint32_t next_free;
} tr__pending;

/* A multiset of references (watchers) or a set (links). Small: linear. */
typedef struct tr__refs {
	uint64_t *v;
	uint32_t n, cap;
} tr__refs;

struct tr__ext {
	/* requests */
	tr__pending *pend;
	uint32_t npend_cap;
	uint32_t free_head; /* index + 1; 0: none */
	uint32_t *heap;     /* entry indices, min-heap on deadline */
	uint32_t nheap;
	uint64_t seq;
	uint64_t tick_deadline; /* 0: no deadline timer armed */
	/* requests this actor received and has not answered yet (kept for its
	 * stop, which answers them "receiver down"); a ring of the newest */
	tr_reply_addr *open;
	uint32_t nopen, open_head;
	/* monitors and links */
	tr__refs watchers;
	tr__refs links;
	bool trap_exit;
};

int tr__refs_add(tr__refs *r, uint64_t id);
bool tr__refs_del(tr__refs *r, uint64_t id); /* one occurrence */
bool tr__refs_has(const tr__refs *r, uint64_t id);
void tr__refs_free(tr__refs *r);

/* ask.c */
#define TR__OPEN_MAX TR_OPEN_REQUESTS_MAX
int tr__ask_on_sys(tr__worker *w, tr__actor *a, tr_msg *m); /* ASK_DONE, ASK_TICK */
/* Answers every request it still holds with TR_EDEAD, frees the tables. */
void tr__ask_free(tr__ext *x);

#endif /* TR_EXT_H */
