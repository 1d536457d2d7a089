/*
 * microstream: TLS as a sans-IO stream wrapper on GnuTLS (see ms_tls.h).
 *
 * A wrapped stream is an engine over ciphertext: feed() appends received
 * bytes to a buffer GnuTLS pulls from; peek() shows what GnuTLS pushed.
 * Plaintext goes to and from the inner engine through its own ops.
 * Progress (handshake, decrypting buffered records, encrypting the inner
 * engine's output) happens in feed() and peek(), so a pump that only
 * writes still moves input the inner engine was not ready for earlier.
 */
#include "ms_internal.h"

#include <microstream/ms_tls.h>

#include <errno.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <stdio.h>
#include <stdlib.h>

#define OUT_HIGH (64 * 1024)  /* ciphertext produced ahead of the socket */
#define IN_MAX (256 * 1024)   /* ciphertext buffered before decrypting */
#define REC_CHUNK 16384

typedef struct tls_creds {
  gnutls_certificate_credentials_t c;
  int refs;
  int verify_client;
} tls_creds;

struct ms_tls {
  int server;
  tls_creds *creds;
  /* The default priorities, parsed once and shared by every stream
   * (GnuTLS counts the references): a session given them as a string
   * keeps a parsed copy of its own, KiBs per idle connection. NULL if
   * they could not be parsed ahead (each session then parses its own). */
  gnutls_priority_t prio;
  ms_stream_wrap wrap;
  size_t streams;
};

enum { ST_HANDSHAKE = 0, ST_OPEN, ST_FAILED };

typedef struct tls_eng {
  ms_tls *t;
  tls_creds *creds;
  gnutls_session_t s;
  const ms_engine_ops *in;
  void *ie;
  int server;
  int state;
  unsigned peer_eof : 1, dead : 1, inner_eof : 1, bye : 1, sniffed : 1,
      got_bytes : 1;
  int64_t now;
  uint8_t *ib;
  size_t ib_off, ib_len, ib_cap;
  uint8_t *ob;
  size_t ob_off, ob_len, ob_cap;
  /* The record headers of what a server's peer sends during the
   * handshake (scan_records), so that a plaintext alert GnuTLS cannot
   * read (it expects encrypted records by then) is still named. */
  uint8_t hdr[5], hdr_len, rec_type, alert[2], alert_len;
  size_t rec_left;
  char err[200];
} tls_eng;

static void creds_unref(tls_creds *c) {
  if (c && --c->refs == 0) {
    gnutls_certificate_free_credentials(c->c);
    free(c);
  }
}

/* "TLS: what file: GnuTLS's reason" (rv 0: no reason). */
static int set_err(char *err, size_t cap, const char *what, const char *file,
                   int rv) {
  if (err && cap)
    snprintf(err, cap, "TLS: %s%s%s%s%s", what, file ? " " : "",
             file ? file : "", rv ? ": " : "", rv ? gnutls_strerror(rv) : "");
  return MS_ERR_INVALID_ARG;
}

/* ---- buffers GnuTLS reads and writes ---- */

static int grow(uint8_t **b, size_t *cap, size_t need) {
  if (need <= *cap)
    return 0;
  size_t n = *cap ? *cap : 4096;
  while (n < need)
    n *= 2;
  uint8_t *p = realloc(*b, n);
  if (!p)
    return -1;
  *b = p;
  *cap = n;
  return 0;
}

static ssize_t pull_fn(gnutls_transport_ptr_t p, void *buf, size_t n) {
  tls_eng *e = p;
  size_t avail = e->ib_len - e->ib_off;
  if (!avail) {
    if (e->peer_eof)
      return 0;
    gnutls_transport_set_errno(e->s, EAGAIN);
    return -1;
  }
  size_t m = MS_MIN(avail, n);
  memcpy(buf, e->ib + e->ib_off, m);
  e->ib_off += m;
  if (e->ib_off == e->ib_len)
    e->ib_off = e->ib_len = 0;
  return (ssize_t)m;
}

static ssize_t push_fn(gnutls_transport_ptr_t p, const void *buf, size_t n) {
  tls_eng *e = p;
  if (e->ob_off && e->ob_off == e->ob_len)
    e->ob_off = e->ob_len = 0;
  if (grow(&e->ob, &e->ob_cap, e->ob_len + n)) {
    gnutls_transport_set_errno(e->s, ENOMEM);
    return -1;
  }
  memcpy(e->ob + e->ob_len, buf, n);
  e->ob_len += n;
  return (ssize_t)n;
}

/* ---- the state machine ---- */

static void inner_eof(tls_eng *e) {
  if (e->inner_eof)
    return;
  e->inner_eof = 1;
  e->in->eof(e->ie, e->now);
}

/* A TLS 1.3 client that refuses our certificate sends its alert in
 * plaintext after our encrypted flight; GnuTLS then reports only that a
 * record could not be decrypted. Follow the record headers while the
 * handshake runs and keep the last plaintext alert's two bytes. */
static void scan_records(tls_eng *e, const uint8_t *d, size_t n) {
  while (n) {
    if (e->hdr_len < 5) {
      e->hdr[e->hdr_len++] = *d++;
      n--;
      if (e->hdr_len == 5) {
        e->rec_type = e->hdr[0];
        e->rec_left = (size_t)e->hdr[3] << 8 | e->hdr[4];
        if (e->rec_type == 21 && e->rec_left == 2)
          e->alert_len = 0;
        if (!e->rec_left)
          e->hdr_len = 0;
      }
      continue;
    }
    size_t k = MS_MIN(n, e->rec_left);
    for (size_t i = 0; i < k && e->rec_type == 21 && e->alert_len < 2; i++)
      e->alert[e->alert_len++] = d[i];
    d += k;
    n -= k;
    e->rec_left -= k;
    if (!e->rec_left)
      e->hdr_len = 0;
  }
}

/* Tell the peer why, when the failure is this side's decision (a
 * certificate refused, a handshake message that makes no sense): GnuTLS
 * picks the alert, or sends none for errors that call for none. Not when
 * the peer alerted, closed or is gone, or does not speak TLS at all. */
static void send_alert(tls_eng *e, int rv) {
  if (e->dead || e->peer_eof || rv == GNUTLS_E_FATAL_ALERT_RECEIVED ||
      rv == GNUTLS_E_WARNING_ALERT_RECEIVED ||
      rv == GNUTLS_E_PREMATURE_TERMINATION ||
      rv == GNUTLS_E_UNEXPECTED_PACKET_LENGTH ||
      rv == GNUTLS_E_UNSUPPORTED_VERSION_PACKET ||
      rv == GNUTLS_E_UNEXPECTED_PACKET || rv == GNUTLS_E_MEMORY_ERROR ||
      (rv == GNUTLS_E_DECRYPTION_FAILED && e->alert_len == 2))
    return; /* (the last: a plaintext alert read where a record was due) */
  /* Our push function never blocks: the alert is in ob once this returns
   * (or was not made), and goes out before the stream is closed. */
  (void)gnutls_alert_send_appropriate(e->s, rv);
}

static void fail(tls_eng *e, const char *what, int rv) {
  if (e->state == ST_FAILED)
    return;
  send_alert(e, rv);
  e->state = ST_FAILED;
  if (rv == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR) {
    gnutls_datum_t out = {NULL, 0};
    unsigned st = gnutls_session_get_verify_cert_status(e->s);
    if (gnutls_certificate_verification_status_print(
            st, gnutls_certificate_type_get(e->s), &out, 0) == 0) {
      snprintf(e->err, sizeof e->err, "%s: certificate rejected: %s", what,
               (const char *)out.data);
      gnutls_free(out.data);
    } else {
      snprintf(e->err, sizeof e->err, "%s: certificate rejected", what);
    }
  } else if (rv == GNUTLS_E_UNEXPECTED_PACKET_LENGTH ||
             rv == GNUTLS_E_UNSUPPORTED_VERSION_PACKET ||
             rv == GNUTLS_E_UNEXPECTED_PACKET) {
    snprintf(e->err, sizeof e->err,
             "%s: the peer does not speak TLS (%s)", what,
             gnutls_strerror(rv));
  } else if (rv == GNUTLS_E_FATAL_ALERT_RECEIVED ||
             rv == GNUTLS_E_WARNING_ALERT_RECEIVED) {
    snprintf(e->err, sizeof e->err, "%s: the peer sent alert '%s'", what,
             gnutls_alert_get_name(gnutls_alert_get(e->s)));
  } else if (rv == GNUTLS_E_DECRYPTION_FAILED && e->alert_len == 2 &&
             gnutls_alert_get_name(e->alert[1])) {
    snprintf(e->err, sizeof e->err, "%s: the peer sent alert '%s'", what,
             gnutls_alert_get_name(e->alert[1]));
  } else {
    snprintf(e->err, sizeof e->err, "%s: %s", what, gnutls_strerror(rv));
  }
  inner_eof(e);
}

static int inner_done(const tls_eng *e) {
  return !e->in->want_read(e->ie) && !e->in->want_write(e->ie);
}

/* A server's first bytes that are not a TLS handshake record: answer a
 * plaintext HTTP request in plaintext, so that `curl http://` on a TLS
 * port says what is wrong, and give up. */
static int sniff_plaintext(tls_eng *e) {
  if (!e->server || e->sniffed || e->ib_len == e->ib_off)
    return 0;
  e->sniffed = 1;
  if (e->ib[e->ib_off] == 0x16)
    return 0;
  static const char msg[] =
      "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n"
      "Content-Length: 50\r\nConnection: close\r\n\r\n"
      "this port speaks TLS: use https:// or wss:// here\n";
  push_fn(e, msg, sizeof msg - 1);
  snprintf(e->err, sizeof e->err, "TLS: plaintext sent to a TLS port");
  e->state = ST_FAILED;
  inner_eof(e);
  return 1;
}

static void advance(tls_eng *e) {
  if (e->state == ST_HANDSHAKE) {
    if (sniff_plaintext(e))
      return;
    if (inner_done(e)) { /* the engine gave up (its own deadline) */
      snprintf(e->err, sizeof e->err, "TLS: closed during the handshake");
      e->state = ST_FAILED;
      return;
    }
    for (;;) {
      int rv = gnutls_handshake(e->s);
      if (rv == GNUTLS_E_SUCCESS) {
        e->state = ST_OPEN;
        break;
      }
      if (rv == GNUTLS_E_AGAIN || rv == GNUTLS_E_INTERRUPTED) {
        if (e->peer_eof)
          fail(e, "TLS handshake", GNUTLS_E_PREMATURE_TERMINATION);
        return;
      }
      if (!gnutls_error_is_fatal(rv))
        continue; /* a warning alert */
      fail(e, "TLS handshake", rv);
      return;
    }
  }
  if (e->state != ST_OPEN)
    return;
  uint8_t buf[REC_CHUNK];
  while (!e->inner_eof && e->in->want_read(e->ie)) {
    ssize_t n = gnutls_record_recv(e->s, buf, sizeof buf);
    if (n > 0) {
      e->in->feed(e->ie, buf, (size_t)n, e->now);
      continue;
    }
    if (n == 0) { /* close_notify */
      e->peer_eof = 1;
      inner_eof(e);
      break;
    }
    if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED ||
        n == GNUTLS_E_PREMATURE_TERMINATION) {
      /* The stream ended without close_notify (browsers do that): an
       * end like any other, not a failure. */
      if (e->peer_eof || n == GNUTLS_E_PREMATURE_TERMINATION)
        inner_eof(e);
      break;
    }
    if (!gnutls_error_is_fatal((int)n))
      continue;
    fail(e, "TLS", (int)n);
    return;
  }
}

/* Encrypt what the inner engine has to send, up to OUT_HIGH pending. */
static void produce(tls_eng *e) {
  if (e->state != ST_OPEN || e->dead)
    return;
  while (e->ob_len - e->ob_off < OUT_HIGH) {
    size_t n = 0;
    const uint8_t *p = e->in->peek(e->ie, &n);
    if (!p || !n)
      break;
    ssize_t w = gnutls_record_send(e->s, p, MS_MIN(n, (size_t)REC_CHUNK));
    if (w > 0) {
      e->in->consume(e->ie, (size_t)w);
      continue;
    }
    if (w == GNUTLS_E_AGAIN || w == GNUTLS_E_INTERRUPTED)
      break;
    fail(e, "TLS", (int)w);
    return;
  }
  if (!e->bye && inner_done(e)) {
    e->bye = 1;
    gnutls_bye(e->s, GNUTLS_SHUT_WR); /* close_notify into ob */
  }
}

/* ---- engine ops over ciphertext ---- */

/* A sleeping session holds no buffer of ours: each is given back once
 * drained (GnuTLS allocates per record anyway; one more malloc per flush
 * is lost in the cost of the cipher). */
static void drop_ib(tls_eng *e) {
  free(e->ib);
  e->ib = NULL;
  e->ib_off = e->ib_len = e->ib_cap = 0;
}

static int w_feed(void *p, const uint8_t *d, size_t n, int64_t now) {
  tls_eng *e = p;
  e->now = now;
  if (e->state == ST_FAILED || !n)
    return 0;
  if (e->ib_off && e->ib_off == e->ib_len)
    e->ib_off = e->ib_len = 0;
  if (e->ib_off > e->ib_cap / 2) { /* compact */
    memmove(e->ib, e->ib + e->ib_off, e->ib_len - e->ib_off);
    e->ib_len -= e->ib_off;
    e->ib_off = 0;
  }
  if (grow(&e->ib, &e->ib_cap, e->ib_len + n)) {
    snprintf(e->err, sizeof e->err, "TLS: out of memory");
    e->state = ST_FAILED;
    inner_eof(e);
    return MS_ERR_NOMEM;
  }
  memcpy(e->ib + e->ib_len, d, n);
  e->ib_len += n;
  e->got_bytes = 1;
  if (e->server && e->state == ST_HANDSHAKE)
    scan_records(e, d, n);
  advance(e);
  if (e->ib && e->ib_len == e->ib_off)
    drop_ib(e);
  return 0;
}

static const uint8_t *w_peek(void *p, size_t *len) {
  tls_eng *e = p;
  if (e->state == ST_OPEN && e->ib_len > e->ib_off)
    advance(e); /* input the inner engine can take now */
  if (e->ib && e->ib_len == e->ib_off)
    drop_ib(e);
  produce(e);
  *len = e->dead ? 0 : e->ob_len - e->ob_off;
  return *len ? e->ob + e->ob_off : NULL;
}

static void w_consume(void *p, size_t n) {
  tls_eng *e = p;
  e->ob_off += MS_MIN(n, e->ob_len - e->ob_off);
  if (e->ob_off == e->ob_len) {
    free(e->ob);
    e->ob = NULL;
    e->ob_off = e->ob_len = e->ob_cap = 0;
  }
}

static int w_want_read(const void *p) {
  const tls_eng *e = p;
  if (e->state == ST_FAILED || e->peer_eof || e->dead ||
      e->ib_len - e->ib_off >= IN_MAX)
    return 0;
  if (e->state == ST_HANDSHAKE)
    return !inner_done(e);
  return !e->inner_eof && e->in->want_read(e->ie);
}

static int w_want_write(const void *p) {
  const tls_eng *e = p;
  if (e->dead)
    return 0;
  if (e->ob_len > e->ob_off)
    return 1;
  if (e->state != ST_OPEN)
    return 0;
  return e->in->want_write(e->ie) || (!e->bye && inner_done(e));
}

static void w_eof(void *p, int64_t now) {
  tls_eng *e = p;
  e->now = now;
  e->peer_eof = 1;
  e->dead = 1; /* nothing more can be written either */
  if (e->state == ST_OPEN) {
    advance(e); /* records still buffered */
  } else if (e->state == ST_HANDSHAKE) {
    /* A server's peer that closes before sending a byte (a port probe, a
     * health check) is no TLS failure. */
    if (!e->server || e->got_bytes)
      snprintf(e->err, sizeof e->err,
               "TLS handshake: the peer closed the connection");
    e->state = ST_FAILED;
  }
  inner_eof(e);
}

static void w_hold(void *p) {
  tls_eng *e = p;
  if (e->in->hold)
    e->in->hold(e->ie);
}

static int w_release(void *p) {
  tls_eng *e = p;
  return e->in->release ? e->in->release(e->ie) : 0;
}

static const ms_engine_ops tls_ops = {w_feed,    w_peek,      w_consume,
                                      w_want_read, w_want_write, w_eof,
                                      w_hold,    w_release};

/* ---- the wrapper ---- */

static int is_ip(const char *h) {
  for (; *h; h++)
    if (!((*h >= '0' && *h <= '9') || *h == '.' || *h == ':' ||
          (*h >= 'a' && *h <= 'f') || (*h >= 'A' && *h <= 'F')))
      return 0;
  return 1;
}

static int w_open(void *self, int server, const char *peer_name,
                  const ms_engine_ops *inner, void *inner_engine,
                  void **wrapped) {
  ms_tls *t = self;
  if (!inner || (server != t->server))
    return MS_ERR_INVALID_ARG;
  if (!server && (!peer_name || !*peer_name))
    return MS_ERR_INVALID_ARG; /* no name, no verification */
  tls_eng *e = calloc(1, sizeof *e);
  if (!e)
    return MS_ERR_NOMEM;
  e->t = t;
  e->in = inner;
  e->ie = inner_engine;
  e->server = server;
  int rv = gnutls_init(&e->s, (server ? GNUTLS_SERVER : GNUTLS_CLIENT) |
                                  GNUTLS_NONBLOCK);
  if (rv) {
    free(e);
    return MS_ERR_NOMEM;
  }
  static const gnutls_datum_t alpn = {(unsigned char *)"http/1.1", 8};
  rv = t->prio ? gnutls_priority_set(e->s, t->prio)
               : gnutls_set_default_priority(e->s);
  if (!rv)
    rv = gnutls_credentials_set(e->s, GNUTLS_CRD_CERTIFICATE, t->creds->c);
  if (!rv)
    rv = gnutls_alpn_set_protocols(e->s, &alpn, 1, 0);
  if (!rv && !server) {
    if (!is_ip(peer_name))
      rv = gnutls_server_name_set(e->s, GNUTLS_NAME_DNS, peer_name,
                                  strlen(peer_name));
    /* Chain and host name (or IP address) checked in the handshake. */
    if (!rv)
      gnutls_session_set_verify_cert(e->s, peer_name, 0);
  }
  if (!rv && server && t->creds->verify_client) {
    gnutls_certificate_server_set_request(e->s, GNUTLS_CERT_REQUIRE);
    gnutls_session_set_verify_cert(e->s, NULL, 0);
  }
  if (rv) {
    gnutls_deinit(e->s);
    free(e);
    return MS_ERR_INVALID_ARG;
  }
  gnutls_transport_set_ptr(e->s, e);
  gnutls_transport_set_push_function(e->s, push_fn);
  gnutls_transport_set_pull_function(e->s, pull_fn);
  gnutls_handshake_set_timeout(e->s, 0); /* the driver keeps the deadline */
  e->creds = t->creds;
  e->creds->refs++;
  t->streams++;
  if (!server) {
    /* The ClientHello goes out at once. */
    int h = gnutls_handshake(e->s);
    if (h != GNUTLS_E_AGAIN && h != GNUTLS_E_INTERRUPTED && h != 0 &&
        gnutls_error_is_fatal(h))
      fail(e, "TLS handshake", h);
  }
  *wrapped = e;
  return 0;
}

static void w_close(void *p) {
  tls_eng *e = p;
  if (!e)
    return;
  if (e->t)
    e->t->streams--;
  gnutls_deinit(e->s);
  creds_unref(e->creds);
  free(e->ib);
  free(e->ob);
  free(e);
}

static int w_established(const void *p) {
  return ((const tls_eng *)p)->state == ST_OPEN;
}

static const char *w_error(const void *p) {
  const tls_eng *e = p;
  return e->err[0] ? e->err : NULL;
}

static const ms_stream_wrap_vtable tls_vt = {w_open, w_close, w_established,
                                             w_error};

/* ---- credentials ---- */

static int creds_new(tls_creds **out, int server, const char *cert,
                     const char *key, const char *ca, char *err,
                     size_t cap) {
  tls_creds *c = calloc(1, sizeof *c);
  if (!c)
    return MS_ERR_NOMEM;
  c->refs = 1;
  if (gnutls_certificate_allocate_credentials(&c->c)) {
    free(c);
    return MS_ERR_NOMEM;
  }
  int rv = 0;
  if (cert || key) {
    if (!cert || !key) {
      rv = set_err(err, cap, "a certificate needs its key", NULL, 0);
    } else {
      int g = gnutls_certificate_set_x509_key_file(c->c, cert, key,
                                                   GNUTLS_X509_FMT_PEM);
      if (g < 0)
        rv = set_err(err, cap, "cannot load", cert, g);
    }
  } else if (server) {
    rv = set_err(err, cap, "a server needs a certificate", NULL, 0);
  }
  if (rv == 0 && ca) {
    int g = gnutls_certificate_set_x509_trust_file(c->c, ca,
                                                   GNUTLS_X509_FMT_PEM);
    if (g <= 0)
      rv = set_err(err, cap, "no CA certificate in", ca,
                   g < 0 ? g : GNUTLS_E_NO_CERTIFICATE_FOUND);
    c->verify_client = server;
  } else if (rv == 0 && !server) {
    int g = gnutls_certificate_set_x509_system_trust(c->c);
    if (g < 0)
      rv = set_err(err, cap, "no system trust store", NULL, g);
  }
  if (rv) {
    creds_unref(c);
    return rv;
  }
  *out = c;
  return 0;
}

static int tls_new(ms_tls **out, int server, const char *cert,
                   const char *key, const char *ca, char *err, size_t cap) {
  if (!out)
    return MS_ERR_INVALID_ARG;
  ms_tls *t = calloc(1, sizeof *t);
  if (!t)
    return MS_ERR_NOMEM;
  t->server = server;
  int rv = creds_new(&t->creds, server, cert, key, ca, err, cap);
  if (rv) {
    free(t);
    return rv;
  }
  if (gnutls_priority_init2(&t->prio, NULL, NULL, 0) < 0)
    t->prio = NULL;
  t->wrap.vt = &tls_vt;
  t->wrap.ops = &tls_ops;
  t->wrap.self = t;
  t->wrap.handshake_timeout_ms = 10000;
  *out = t;
  return 0;
}

int ms_tls_server_new(ms_tls **out, const char *cert_file,
                      const char *key_file, const char *client_ca_file,
                      char *err, size_t err_cap) {
  if (!cert_file || !key_file)
    return MS_ERR_INVALID_ARG;
  return tls_new(out, 1, cert_file, key_file, client_ca_file, err, err_cap);
}

int ms_tls_client_new(ms_tls **out, const char *ca_file, const char *cert_file,
                      const char *key_file, char *err, size_t err_cap) {
  return tls_new(out, 0, cert_file, key_file, ca_file, err, err_cap);
}

int ms_tls_reload(ms_tls *t, const char *cert_file, const char *key_file,
                  const char *client_ca_file, char *err, size_t err_cap) {
  if (!t || !t->server)
    return MS_ERR_INVALID_ARG;
  tls_creds *c;
  int rv = creds_new(&c, 1, cert_file, key_file, client_ca_file, err,
                     err_cap);
  if (rv)
    return rv;
  creds_unref(t->creds);
  t->creds = c;
  return 0;
}

const ms_stream_wrap *ms_tls_wrap(ms_tls *t) { return t ? &t->wrap : NULL; }

void ms_tls_set_handshake_timeout(ms_tls *t, int64_t ms) {
  if (t)
    t->wrap.handshake_timeout_ms = ms > 0 ? ms : 0;
}

size_t ms_tls_streams(const ms_tls *t) { return t ? t->streams : 0; }

void ms_tls_del(ms_tls *t) {
  if (!t)
    return;
  if (t->prio)
    gnutls_priority_deinit(t->prio);
  creds_unref(t->creds);
  free(t);
}
