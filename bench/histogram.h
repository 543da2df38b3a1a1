/*
 * histogram.h: a fixed-size, log-bucketed latency histogram (header only).
 *
 * HdrHistogram's layout in miniature: values below 2 * HIST_SUB are counted
 * exactly; above that, every power-of-two range [2^k, 2^(k+1)) is split into
 * HIST_SUB equal buckets, so a bucket is at most 1/HIST_SUB (1.6%) of its
 * values wide and its midpoint is within 0.8% of any value in it. With
 * values in nanoseconds this covers 0 .. 2^HIST_MAX_BITS ns (about 17 s) in
 * HIST_BUCKETS counters (15 KiB); larger values land in the last bucket
 * (their exact maximum is still kept in `max`).
 *
 * Why not keep every sample and sort, as the peers do: recording must cost
 * a few nanoseconds and no allocation, whatever N is, so that the open-loop
 * run can record millions of samples without the recorder itself showing up
 * in the tail it measures.
 *
 * Not thread-safe: one recorder (an actor's state), read after it is done.
 */
#ifndef TROUPE_BENCH_HISTOGRAM_H
#define TROUPE_BENCH_HISTOGRAM_H

#include <stdint.h>
#include <string.h>

#define HIST_SUB_BITS 6u
#define HIST_SUB (1u << HIST_SUB_BITS) /* buckets per power of two */
#define HIST_MAX_BITS 34u              /* 2^34 ns ~ 17.2 s */
/* exact part [0, 2*SUB) + SUB buckets for each of the doublings above it */
#define HIST_BUCKETS (2u * HIST_SUB + (HIST_MAX_BITS - HIST_SUB_BITS - 1u) * HIST_SUB)

struct hist {
	uint64_t count;
	uint64_t min, max; /* exact; min is UINT64_MAX while empty */
	uint64_t sum;      /* for the mean; wraps only after ~584 years of ns */
	uint64_t b[HIST_BUCKETS];
};

static inline void hist_init(struct hist *h)
{
	memset(h, 0, sizeof *h);
	h->min = UINT64_MAX;
}

/* Bucket of value v. */
static inline unsigned hist_index(uint64_t v)
{
	unsigned msb, shift, idx;

	if (v < 2u * HIST_SUB)
		return (unsigned)v;
	msb = 63u - (unsigned)__builtin_clzll(v);
	/* v >> shift is in [SUB, 2 * SUB): the top HIST_SUB_BITS + 1 bits */
	shift = msb - HIST_SUB_BITS;
	idx = 2u * HIST_SUB + (shift - 1u) * HIST_SUB + (unsigned)((v >> shift) - HIST_SUB);
	return idx < HIST_BUCKETS ? idx : HIST_BUCKETS - 1u;
}

/* Lowest value of bucket i, and its width. */
static inline uint64_t hist_lowest(unsigned i, uint64_t *width)
{
	unsigned shift;

	if (i < 2u * HIST_SUB) {
		*width = 1;
		return i;
	}
	shift = (i - 2u * HIST_SUB) / HIST_SUB + 1u;
	*width = (uint64_t)1 << shift;
	return (uint64_t)(HIST_SUB + (i - 2u * HIST_SUB) % HIST_SUB) << shift;
}

static inline void hist_record(struct hist *h, uint64_t v)
{
	h->b[hist_index(v)]++;
	h->count++;
	h->sum += v;
	if (v < h->min)
		h->min = v;
	if (v > h->max)
		h->max = v;
}

/*
 * hist_percentile: the value of rank floor(p * (count - 1)) (0-based) in
 * sorted order, p in [0, 1]; the same rank the peers take with
 * nth_element, so the two agree to within a bucket. Returns the bucket's
 * midpoint, clamped to the exact [min, max]; 0 if empty.
 */
static inline uint64_t hist_percentile(const struct hist *h, double p)
{
	uint64_t rank, seen = 0, lo, width, mid;
	unsigned i;

	if (h->count == 0)
		return 0;
	if (p <= 0)
		return h->min;
	if (p >= 1)
		return h->max;
	rank = (uint64_t)(p * (double)(h->count - 1));
	for (i = 0; i < HIST_BUCKETS; i++) {
		seen += h->b[i];
		if (seen > rank)
			break;
	}
	if (i == HIST_BUCKETS)
		return h->max;
	lo = hist_lowest(i, &width);
	mid = lo + width / 2;
	if (mid < h->min)
		return h->min;
	if (mid > h->max)
		return h->max;
	return mid;
}

static inline double hist_mean(const struct hist *h)
{
	return h->count ? (double)h->sum / (double)h->count : 0.0;
}

#endif /* TROUPE_BENCH_HISTOGRAM_H */
