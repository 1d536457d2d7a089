/* microstream: services that call each other by name and stream their
 * logs over WebSockets. This header includes the whole core API; the POSIX
 * transport is in <microstream/ms_posix.h>. */
#ifndef MICROSTREAM_H
#define MICROSTREAM_H

#include <microstream/ms_common.h>
#include <microstream/ms_codec.h>
#include <microstream/ms_conn.h>
#include <microstream/ms_transport.h>
#include <microstream/ms_client.h>
#include <microstream/ms_token.h>
#include <microstream/ms_hub.h>
#include <microstream/ms_hub_cluster.h>
#include <microstream/ms_log.h>

#endif
