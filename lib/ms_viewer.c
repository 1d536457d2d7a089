/* The live log viewer page (web/viewer.html, embedded at build time) and
 * the response that serves it. The hub engine only decides when. */
#include "ms_viewer.h"

extern const unsigned char ms_viewer_html[];
extern const size_t ms_viewer_html_len;

int ms_viewer_respond(ms_conn *c) {
  return ms_conn_http_respond(c, 200, "text/html; charset=utf-8",
                              "Cache-Control: no-cache\r\n", ms_viewer_html,
                              ms_viewer_html_len);
}
