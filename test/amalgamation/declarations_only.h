/* Declared here, defined in declarations_only.c: a second translation unit
 * that includes the single header without MICROSTREAM_IMPLEMENTATION, as
 * every file but one of a program does. */
#ifndef DECLARATIONS_ONLY_H
#define DECLARATIONS_ONLY_H

int send_user(ms_client *c, const char *target, const char *event,
              const char *user, ms_response_fn cb, void *ud);

#endif
