/*
 * Unit tests for troupe/error.h: every code has a stable message and name,
 * and codes troupe never produces still get a usable string.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <string.h>

#include "troupe.h"

struct err_entry {
	int code;
	const char *name;
	const char *msg;
};

/* Built from the same X-macro as the enum, so a code added to the map is
 * covered here without touching the tests. */
static const struct err_entry errs[] = {
#define ENTRY(name, value, msg) { TR_##name, "TR_" #name, msg },
	TR_ERRNO_MAP(ENTRY)
#undef ENTRY
};
#define NERRS (sizeof(errs) / sizeof(errs[0]))

/* Codes troupe never returns: positive errnos, gaps in the -4000 range, extremes. */
static const int unknown_codes[] = {
	1, -1, 22, 4001, -4000, -4050, -4100, -9999, INT_MIN, INT_MAX,
};
#define NUNKNOWN (sizeof(unknown_codes) / sizeof(unknown_codes[0]))

Test(error, strerror_matches_map_for_every_code)
{
	for (size_t i = 0; i < NERRS; i++) {
		const char *s = tr_strerror(errs[i].code);

		cr_assert_not_null(s, "%s", errs[i].name);
		cr_assert_str_eq(s, errs[i].msg, "%s", errs[i].name);
	}
}

Test(error, err_name_matches_map_for_every_code)
{
	for (size_t i = 0; i < NERRS; i++) {
		const char *s = tr_err_name(errs[i].code);

		cr_assert_not_null(s, "code %d", errs[i].code);
		cr_assert_str_eq(s, errs[i].name);
	}
}

Test(error, success_code)
{
	cr_assert_str_eq(tr_strerror(TR_OK), "success");
	cr_assert_not_null(tr_err_name(TR_OK));
	cr_assert_str_eq(tr_err_name(TR_OK), "TR_OK");
}

Test(error, unknown_codes_never_null)
{
	for (size_t i = 0; i < NUNKNOWN; i++) {
		int c = unknown_codes[i];

		cr_assert_not_null(tr_strerror(c), "code %d", c);
		cr_assert_not_null(tr_err_name(c), "code %d", c);
		cr_assert_str_eq(tr_strerror(c), "unknown error", "code %d", c);
		cr_assert_str_eq(tr_err_name(c), "TR_UNKNOWN", "code %d", c);
	}
}

/* A message that two codes share would make logs ambiguous. */
Test(error, messages_and_names_are_distinct)
{
	for (size_t i = 0; i < NERRS; i++) {
		const char *mi = tr_strerror(errs[i].code);
		const char *ni = tr_err_name(errs[i].code);

		cr_assert_str_neq(mi, tr_strerror(TR_OK));
		cr_assert_str_neq(mi, "unknown error");
		cr_assert_str_neq(ni, "TR_UNKNOWN");
		for (size_t j = i + 1; j < NERRS; j++) {
			cr_assert_str_neq(mi, tr_strerror(errs[j].code), "%s vs %s",
					  errs[i].name, errs[j].name);
			cr_assert_str_neq(ni, tr_err_name(errs[j].code));
		}
	}
}

/* The codes with a POSIX twin are its negation (libuv style), so callers
 * may compare against -errno. */
Test(error, posix_twins_are_negated_errno)
{
	cr_assert_eq(TR_EINVAL, -EINVAL);
	cr_assert_eq(TR_ENOMEM, -ENOMEM);
	cr_assert_eq(TR_E2BIG, -E2BIG);
	cr_assert_eq(TR_ETIMEDOUT, -ETIMEDOUT);
	for (size_t i = 0; i < NERRS; i++)
		cr_assert_lt(errs[i].code, 0, "%s must be negative", errs[i].name);
}

/* Strings are static: the same code gives the same storage every time and
 * it outlives any call, so callers may keep the pointer. */
Test(error, strings_are_static)
{
	for (size_t i = 0; i < NERRS; i++) {
		cr_assert_eq(tr_strerror(errs[i].code), tr_strerror(errs[i].code));
		cr_assert_eq(tr_err_name(errs[i].code), tr_err_name(errs[i].code));
	}
}
