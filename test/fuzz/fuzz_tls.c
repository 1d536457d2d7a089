/* Fuzz the server side of the TLS layer (ms_tls.c): what a client sends
 * before and during the handshake (the plaintext sniff, the record
 * headers followed for a plaintext alert, GnuTLS's own parser behind the
 * push/pull buffers). The first byte picks the size of the pieces the
 * rest is fed in, so record headers fall across feeds. The certificate
 * is a throwaway self-signed test one, written to a temporary file once. */
#include <microstream/ms_tls.h>

#include "ms_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char key_pem[] =
    "-----BEGIN EC PRIVATE KEY-----\n"
    "MHgCAQEEIQC4KvMSiuU+cbdxD+ESLI8BgIx+Raa6deNLKSK8YyHy1KAKBggqhkjO\n"
    "PQMBB6FEA0IABCcQ+TYeYFtxyvXKJ+fK+nrEqYIHjvBU1ccQULhYx7CUcwO8i2bt\n"
    "G28QAfgnoQYyJn8jw9QjlcXTyoOJb0cD8+k=\n"
    "-----END EC PRIVATE KEY-----\n";
static const char cert_pem[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBjDCCATKgAwIBAgIUUIPZEgTgh95HlyWiq1TZONEaDhkwCgYIKoZIzj0EAwIw\n"
    "DzENMAsGA1UEAxMEZnV6ejAgFw0yNjExMzAxMjI0NDRaGA85OTk5MTIzMTIzNTk1\n"
    "OVowDzENMAsGA1UEAxMEZnV6ejBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABCcQ\n"
    "+TYeYFtxyvXKJ+fK+nrEqYIHjvBU1ccQULhYx7CUcwO8i2btG28QAfgnoQYyJn8j\n"
    "w9QjlcXTyoOJb0cD8+mjajBoMAwGA1UdEwEB/wQCMAAwFAYDVR0RBA0wC4IJbG9j\n"
    "YWxob3N0MBMGA1UdJQQMMAoGCCsGAQUFBwMBMA4GA1UdDwEB/wQEAwIHgDAdBgNV\n"
    "HQ4EFgQUs682j9c30IZnIFBpuqKUYMAekKwwCgYIKoZIzj0EAwIDSAAwRQIhAKgG\n"
    "XmQNS0LxKdFGdWXIO51rjmEDWrHNp9ucLJKuadrBAiBV8KIOoadHKORa7+nNeQ+3\n"
    "uY6If5xW/vNie8S6KquztA==\n"
    "-----END CERTIFICATE-----\n";

static int in_feed(void *e, const uint8_t *d, size_t n, int64_t now) {
  (void)e;
  (void)d;
  (void)n;
  (void)now;
  return 0;
}
static const uint8_t *in_peek(void *e, size_t *len) {
  (void)e;
  *len = 0;
  return NULL;
}
static void in_consume(void *e, size_t n) {
  (void)e;
  (void)n;
}
static int in_want_read(const void *e) {
  (void)e;
  return 1;
}
static int in_want_write(const void *e) {
  (void)e;
  return 0;
}
static void in_eof(void *e, int64_t now) {
  (void)e;
  (void)now;
}
static const ms_engine_ops inner = {in_feed,       in_peek,  in_consume,
                                    in_want_read,  in_want_write, in_eof,
                                    NULL,          NULL};

static int write_tmp(char *path, const char *text) {
  int fd = mkstemp(path);
  if (fd < 0)
    return -1;
  size_t n = strlen(text);
  int ok = write(fd, text, n) == (ssize_t)n;
  close(fd);
  return ok ? 0 : -1;
}

static ms_tls *server(void) {
  static ms_tls *t;
  static int tried;
  if (!tried) {
    tried = 1;
    char kp[] = "/tmp/ms-fuzz-tls-key.XXXXXX";
    char cp[] = "/tmp/ms-fuzz-tls-cert.XXXXXX";
    char err[300];
    if (write_tmp(kp, key_pem) == 0 && write_tmp(cp, cert_pem) == 0 &&
        ms_tls_server_new(&t, cp, kp, NULL, err, sizeof err) != 0) {
      fprintf(stderr, "fuzz_tls: %s\n", err);
      abort();
    }
    unlink(kp);
    unlink(cp);
  }
  return t;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1 || size > 65536)
    return 0;
  ms_tls *t = server();
  if (!t)
    abort();
  const ms_stream_wrap *w = ms_tls_wrap(t);
  void *s;
  if (w->vt->open(w->self, 1, NULL, &inner, NULL, &s) != 0)
    return 0;
  size_t piece = (size_t)data[0] + 1;
  const uint8_t *p = data + 1;
  size_t left = size - 1;
  int64_t now = 1;
  while (left && w->ops->want_read(s)) {
    size_t n = MS_MIN(piece, left);
    w->ops->feed(s, p, n, now++);
    p += n;
    left -= n;
    size_t out;
    w->ops->peek(s, &out);
    w->ops->consume(s, out);
  }
  w->ops->eof(s, now);
  size_t out;
  w->ops->peek(s, &out);
  w->ops->consume(s, out);
  (void)w->vt->established(s);
  (void)w->vt->error(s);
  w->vt->close(s);
  return 0;
}
