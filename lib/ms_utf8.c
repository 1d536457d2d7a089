/* UTF-8 validator following the well-formed byte sequence table of the
 * Unicode standard (ch. 3, table 3-7): the first byte fixes the length and
 * the allowed range of the second byte, which is what excludes overlongs,
 * surrogates and values above U+10FFFF. */
#include "ms_utf8.h"

#include <string.h>

void ms_utf8_init(ms_utf8_state *s) {
  s->need = 0;
  s->lo = 0x80;
  s->hi = 0xBF;
  s->bad = 0;
}

int ms_utf8_feed(ms_utf8_state *s, const uint8_t *p, size_t len) {
  if (s->bad)
    return -1;
  size_t i = 0;
  while (i < len) {
    uint8_t b = p[i];
    if (s->need == 0) {
      /* Fast path over ASCII runs: eight bytes at a time. */
      if (b < 0x80) {
        i++;
        while (len - i >= 8) {
          uint64_t w;
          memcpy(&w, p + i, 8);
          if (w & UINT64_C(0x8080808080808080))
            break;
          i += 8;
        }
        continue;
      }
      if (b >= 0xC2 && b <= 0xDF) {
        s->need = 1;
        s->lo = 0x80, s->hi = 0xBF;
      } else if (b == 0xE0) {
        s->need = 2;
        s->lo = 0xA0, s->hi = 0xBF; /* no overlong 3-byte forms */
      } else if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF) {
        s->need = 2;
        s->lo = 0x80, s->hi = 0xBF;
      } else if (b == 0xED) {
        s->need = 2;
        s->lo = 0x80, s->hi = 0x9F; /* no surrogates */
      } else if (b == 0xF0) {
        s->need = 3;
        s->lo = 0x90, s->hi = 0xBF; /* no overlong 4-byte forms */
      } else if (b >= 0xF1 && b <= 0xF3) {
        s->need = 3;
        s->lo = 0x80, s->hi = 0xBF;
      } else if (b == 0xF4) {
        s->need = 3;
        s->lo = 0x80, s->hi = 0x8F; /* nothing above U+10FFFF */
      } else {
        s->bad = 1; /* C0, C1, F5..FF, or a stray continuation byte */
        return -1;
      }
    } else {
      if (b < s->lo || b > s->hi) {
        s->bad = 1;
        return -1;
      }
      s->need--;
      s->lo = 0x80, s->hi = 0xBF;
    }
    i++;
  }
  return 0;
}

int ms_utf8_complete(const ms_utf8_state *s) {
  return !s->bad && s->need == 0;
}

int ms_utf8_valid(const uint8_t *p, size_t len) {
  ms_utf8_state s;
  ms_utf8_init(&s);
  return ms_utf8_feed(&s, p, len) == 0 && ms_utf8_complete(&s);
}
