/* The hub's configuration file (see hub_config.h). */
#include "hub_config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LINE 4096
#define MAX_ENTRIES 1024

void hub_config_free(hub_config_args *a) {
  if (!a->argv)
    return;
  for (int i = 0; i < a->argc; i++)
    free(a->argv[i]);
  free(a->argv);
  a->argv = NULL;
  a->argc = 0;
}

static char *trim(char *s) {
  while (isspace((unsigned char)*s))
    s++;
  size_t n = strlen(s);
  while (n > 0 && isspace((unsigned char)s[n - 1]))
    s[--n] = '\0';
  return s;
}

static int push(hub_config_args *a, const char *text) {
  char *copy = strdup(text);
  if (!copy)
    return -1;
  a->argv[a->argc++] = copy;
  return 0;
}

int hub_config_read(const char *path, const struct option *options,
                    const char *const *refused, hub_config_args *out,
                    char *err, size_t err_size) {
  memset(out, 0, sizeof *out);
  FILE *f = fopen(path, "r");
  if (!f) {
    snprintf(err, err_size, "%s: %s", path, strerror(errno));
    return -1;
  }
  out->argv = calloc(MAX_ENTRIES + 2, sizeof *out->argv);
  if (!out->argv || push(out, "microstream-hub") != 0) {
    fclose(f);
    hub_config_free(out);
    snprintf(err, err_size, "%s: out of memory", path);
    return -1;
  }
  char line[MAX_LINE + 2];
  int lineno = 0, rv = 0;
  while (rv == 0 && fgets(line, sizeof line, f)) {
    lineno++;
    if (strlen(line) > MAX_LINE) {
      snprintf(err, err_size, "%s:%d: line too long", path, lineno);
      rv = -1;
      break;
    }
    char *s = trim(line);
    if (!*s || *s == '#' || *s == ';')
      continue;
    char *eq = strchr(s, '=');
    char *key = s, *val = NULL;
    if (eq) {
      *eq = '\0';
      key = trim(s);
      val = trim(eq + 1);
      size_t vn = strlen(val);
      if (vn >= 2 && ((val[0] == '"' && val[vn - 1] == '"') ||
                      (val[0] == '\'' && val[vn - 1] == '\''))) {
        val[vn - 1] = '\0';
        val++;
      }
    }
    const struct option *o = NULL;
    for (const struct option *p = options; p->name; p++)
      if (!strcmp(p->name, key))
        o = p;
    for (const char *const *r = refused; o && r && *r; r++)
      if (!strcmp(*r, key))
        o = NULL;
    if (!o) {
      snprintf(err, err_size, "%s:%d: unknown key '%s'", path, lineno, key);
      rv = -1;
      break;
    }
    if (out->argc >= MAX_ENTRIES) {
      snprintf(err, err_size, "%s:%d: too many entries", path, lineno);
      rv = -1;
      break;
    }
    char arg[MAX_LINE + 64];
    if (o->has_arg == no_argument) {
      int on = !val || !strcmp(val, "true") || !strcmp(val, "yes") ||
               !strcmp(val, "on") || !strcmp(val, "1");
      int off = val && (!strcmp(val, "false") || !strcmp(val, "no") ||
                        !strcmp(val, "off") || !strcmp(val, "0"));
      if (!on && !off) {
        snprintf(err, err_size, "%s:%d: '%s' is true or false, not '%s'",
                 path, lineno, key, val);
        rv = -1;
        break;
      }
      if (off)
        continue;
      snprintf(arg, sizeof arg, "--%s", key);
    } else {
      if (!val || !*val) {
        snprintf(err, err_size, "%s:%d: '%s' needs a value", path, lineno,
                 key);
        rv = -1;
        break;
      }
      snprintf(arg, sizeof arg, "--%s=%s", key, val);
    }
    if (push(out, arg) != 0) {
      snprintf(err, err_size, "%s: out of memory", path);
      rv = -1;
    }
  }
  if (rv == 0 && ferror(f)) {
    snprintf(err, err_size, "%s: %s", path, strerror(errno));
    rv = -1;
  }
  fclose(f);
  if (rv != 0)
    hub_config_free(out);
  return rv;
}
