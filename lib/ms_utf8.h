/*
 * UTF-8 validation (RFC 3629): rejects overlong forms, surrogates
 * (U+D800..U+DFFF) and code points above U+10FFFF. Works on a whole
 * buffer or incrementally across chunks (a fragmented text message).
 */
#ifndef MS_UTF8_H
#define MS_UTF8_H

#include <stddef.h>
#include <stdint.h>

typedef struct ms_utf8_state {
  uint8_t need; /* continuation bytes still expected */
  uint8_t lo;   /* allowed range of the next continuation byte */
  uint8_t hi;
  uint8_t bad;  /* sticky: an invalid sequence was seen */
} ms_utf8_state;

void ms_utf8_init(ms_utf8_state *s);

/* Feed a chunk; returns 0 while still valid, -1 once invalid. */
int ms_utf8_feed(ms_utf8_state *s, const uint8_t *p, size_t len);

/* Non-zero if everything fed is valid and ends on a code point boundary. */
int ms_utf8_complete(const ms_utf8_state *s);

/* Non-zero if the whole buffer is valid UTF-8. */
int ms_utf8_valid(const uint8_t *p, size_t len);

#endif
