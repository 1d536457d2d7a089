/* The live log viewer page. Not installed. */
#ifndef MS_VIEWER_H
#define MS_VIEWER_H

#include <microstream/ms_conn.h>

/* Answer a plain HTTP request on c with the viewer page (a HEAD request
 * gets the head only). Returns ms_conn_http_respond()'s result. */
int ms_viewer_respond(ms_conn *c);

#endif
