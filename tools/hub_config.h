/* The hub's configuration file: one option per line, named as the long
 * command-line option without its dashes.
 *
 *     # comment
 *     listen = 127.0.0.1:7400
 *     listen = [::1]:7400        (repeatable options repeat)
 *     heartbeat-ms = 10000
 *     replace-stale = true       (options without a value: true or false)
 *     store = /var/lib/microstream/logs.db
 *
 * Every option has a key, because the file is read into arguments for the
 * same option table; options given on the command line win. */
#ifndef MS_HUB_CONFIG_H
#define MS_HUB_CONFIG_H

#include <getopt.h>
#include <stddef.h>

typedef struct hub_config_args {
  char **argv; /* argv[0] is a placeholder; "--key=value" after it */
  int argc;
} hub_config_args;

/* Read path into arguments for getopt_long with `options` (terminated by
 * a zero entry). Keys listed in `refused` (NULL-terminated) are not
 * allowed in a file. Returns 0, or -1 with a message "PATH:LINE: ..." in
 * err. */
int hub_config_read(const char *path, const struct option *options,
                    const char *const *refused, hub_config_args *out,
                    char *err, size_t err_size);
void hub_config_free(hub_config_args *a);

#endif
