/* The client's subscriptions to the hub's streams (logs, presence): the
 * SUBSCRIBE it sends, resuming after a reconnect, the records it hands
 * out (see ms_log.h). */
#include "ms_client_log_int.h"

#include <stdio.h>

static int send_subscribe(ms_client *c, csub *s) {
  /* The filter map, then the message around it (ms_enc_subscribe_raw). */
  ms_mpbuf fb;
  ms_mpbuf_init(&fb, c->mem);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &fb, ms_mpbuf_write);
  int resume = s->last_seq > 0 && strcmp(s->hub_id, c->hub_id) == 0;
  size_t n = (s->n_services > 0) + (s->min_level > 0) + (s->contains != NULL) +
             (resume || s->history > 0);
  msgpack_pack_map(&pk, n);
  if (s->n_services) {
    msgpack_pack_str_with_body(&pk, "services", 8);
    msgpack_pack_array(&pk, s->n_services);
    for (size_t i = 0; i < s->n_services; i++)
      msgpack_pack_str_with_body(&pk, s->services[i], strlen(s->services[i]));
  }
  if (s->min_level > 0) {
    msgpack_pack_str_with_body(&pk, "min_level", 9);
    msgpack_pack_int64(&pk, s->min_level);
  }
  if (s->contains) {
    msgpack_pack_str_with_body(&pk, "contains", 8);
    msgpack_pack_str_with_body(&pk, s->contains, strlen(s->contains));
  }
  if (resume) {
    msgpack_pack_str_with_body(&pk, "since_seq", 9);
    msgpack_pack_uint64(&pk, s->last_seq);
  } else if (s->history > 0) {
    msgpack_pack_str_with_body(&pk, "history", 7);
    msgpack_pack_uint64(&pk, s->history);
  }
  if (!resume) {
    s->last_seq = 0;
    snprintf(s->hub_id, sizeof s->hub_id, "%s", c->hub_id);
  }
  ms_mpbuf sb;
  ms_mpbuf_init(&sb, c->mem);
  msgpack_packer mpk;
  msgpack_packer_init(&mpk, &sb, ms_mpbuf_write);
  const char *stream = s->presence ? "presence" : "logs";
  int rv = MS_ERR_NOMEM;
  /* Never a SUBSCRIBE without its whole filter. */
  if (!fb.failed &&
      ms_enc_subscribe_raw(&mpk, s->sub_id, ms_str_c(stream),
                           (const uint8_t *)fb.sb.data, fb.sb.size) == 0 &&
      !sb.failed)
    rv = ms_client_send_mp(c, (const uint8_t *)sb.sb.data, sb.sb.size);
  ms_mpbuf_destroy(&sb);
  ms_mpbuf_destroy(&fb);
  return rv;
}

static void csub_free(ms_client *c, csub *s) {
  for (size_t i = 0; i < s->n_services; i++)
    ms_free(c->mem, s->services[i]);
  ms_free(c->mem, s->services);
  ms_free(c->mem, s->contains);
  ms_free(c->mem, s);
}

int ms_client_subscribe(ms_client *c, const char *stream,
                        const ms_subscribe_opts *o, ms_record_fn fn, void *ud,
                        uint64_t *sub_id) {
  if (!c || !stream || !fn)
    return MS_ERR_INVALID_ARG;
  if (ms_life_dead(&c->life))
    return MS_ERR_STATE;
  int presence;
  if (!strcmp(stream, "logs"))
    presence = 0;
  else if (!strcmp(stream, "presence"))
    presence = 1;
  else
    return MS_ERR_INVALID_ARG;
  ms_client_logs *l = ms_client_logs_of(c);
  csub *s = l ? ms_calloc(c->mem, 1, sizeof *s) : NULL;
  if (!s)
    return MS_ERR_NOMEM;
  s->presence = presence;
  s->fn = fn;
  s->ud = ud;
  if (o) {
    s->min_level = o->min_level;
    s->history = o->history;
    if (o->contains && *o->contains) {
      s->contains = ms_strndup(c->mem, o->contains, strlen(o->contains));
      if (!s->contains) {
        csub_free(c, s);
        return MS_ERR_NOMEM;
      }
    }
    if (o->n_services) {
      s->services = ms_calloc(c->mem, o->n_services, sizeof(char *));
      if (!s->services) {
        csub_free(c, s);
        return MS_ERR_NOMEM;
      }
      for (size_t i = 0; i < o->n_services; i++) {
        s->services[i] = ms_strndup(c->mem, o->services[i],
                                    strlen(o->services[i]));
        if (!s->services[i]) {
          csub_free(c, s);
          return MS_ERR_NOMEM;
        }
        s->n_services++;
      }
    }
  }
  s->sub_id = l->next_sub++;
  if (c->state == MS_CLIENT_READY && send_subscribe(c, s) == MS_ERR_NOMEM) {
    csub_free(c, s);
    return MS_ERR_NOMEM;
  }
  s->next = l->subs;
  l->subs = s;
  if (sub_id)
    *sub_id = s->sub_id;
  return 0;
}

int ms_client_unsubscribe(ms_client *c, uint64_t sub_id) {
  if (ms_life_dead(&c->life))
    return MS_ERR_STATE;
  ms_client_logs *l = c->logs;
  if (!l)
    return MS_ERR_NOT_FOUND;
  for (csub **pp = &l->subs; *pp; pp = &(*pp)->next) {
    csub *s = *pp;
    if (s->sub_id != sub_id)
      continue;
    *pp = s->next;
    if (c->state == MS_CLIENT_READY) {
      ms_mpbuf sb;
      ms_mpbuf_init(&sb, c->mem);
      msgpack_packer pk;
      msgpack_packer_init(&pk, &sb, ms_mpbuf_write);
      if (ms_enc_unsubscribe(&pk, sub_id) == 0 && !sb.failed)
        ms_client_send_mp(c, (const uint8_t *)sb.sb.data, sb.sb.size);
      ms_mpbuf_destroy(&sb);
    }
    csub_free(c, s);
    return 0;
  }
  return MS_ERR_NOT_FOUND;
}

int ms_client_logs_on_msg(ms_client *c, const ms_msg *m) {
  ms_client_logs *l = c->logs;
  if (!l || m->id < SUB_ID_BASE)
    return 0;
  csub *s = l->subs;
  while (s && s->sub_id != m->id)
    s = s->next;
  if (!s)
    return m->type == MS_MSG_RECORD || m->type == MS_MSG_PRESENCE;
  if (m->type == MS_MSG_ERROR) {
    char what[200];
    snprintf(what, sizeof what, "%.*s: %.*s", (int)m->code.len, m->code.ptr,
             (int)m->message.len, m->message.ptr ? m->message.ptr : "");
    uint64_t id = s->sub_id;
    ms_client_unsubscribe(c, id);
    ms_client_diag(c, MS_LEVEL_ERROR, "subscription refused by the hub: %s",
                   what);
    return 1;
  }
  ms_record r;
  memset(&r, 0, sizeof r);
  r.sub_id = m->id;
  r.seq = m->seq;
  r.ts_us = m->ts_us;
  r.level = m->level;
  r.service = m->name;
  r.message = m->message;
  r.fields = &m->extra;
  r.hub_id = c->hub_id;
  if (m->type == MS_MSG_PRESENCE) {
    r.kind = m->kind.len == 2 && !memcmp(m->kind.ptr, "up", 2) ? MS_RECORD_UP
                                                                : MS_RECORD_DOWN;
    if (m->seq > s->last_seq)
      s->last_seq = m->seq;
  } else if (m->level == 0) {
    int live = m->message.len == 4 && !memcmp(m->message.ptr, "live", 4);
    r.kind = live ? MS_RECORD_LIVE : MS_RECORD_GAP;
    if (!live)
      ms_map_get_u64(&m->extra, "missed", &r.missed);
    if (m->seq > s->last_seq)
      s->last_seq = m->seq;
  } else {
    r.kind = MS_RECORD_LOG;
    if (m->seq <= s->last_seq && strcmp(s->hub_id, c->hub_id) == 0)
      return 1; /* already delivered before a reconnect */
    s->last_seq = m->seq;
  }
  snprintf(s->hub_id, sizeof s->hub_id, "%s", c->hub_id);
  s->fn(c, &r, s->ud);
  return 1;
}

void ms_client_subs_ready(ms_client *c, ms_client_logs *l) {
  for (csub *s = l->subs; s; s = s->next)
    send_subscribe(c, s);
}

void ms_client_subs_free(ms_client *c, ms_client_logs *l) {
  while (l->subs) {
    csub *s = l->subs;
    l->subs = s->next;
    csub_free(c, s);
  }
}
